# One image for every CaaS service and job: `caas serve <name>`, `caas migrate`, `caas deploy`,
# `caas simulator` (docker-compose.yml runs one container per service of the port map).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# The pinned lock first: this layer is rebuilt only when the dependencies change.
COPY requirements.lock ./
RUN pip install -r requirements.lock

# `pip install -e .` keeps the checkout layout the code relies on: contracts/ beside offchain/
# (offchain.chain.artifacts compiles them with the pinned vyper and snekmate when `caas deploy`
# runs); deployments are written to DEPLOYMENT_FILE at run time, never baked into the image.
COPY pyproject.toml ./
COPY offchain ./offchain
COPY contracts ./contracts
COPY scripts ./scripts
RUN pip install --no-deps -e . \
    && useradd --create-home --uid 10001 caas \
    && mkdir -p /deployments \
    && chown caas /deployments

USER caas
ENV CAAS_BIND_HOST=0.0.0.0
EXPOSE 8000-8010 8100
CMD ["caas", "--help"]
