// Operator console: every read and action through the existing operator APIs, under the pasted
// operator token (so each action is the operator's in the audit log, as with curl).
import { $, api, busy, el, status, table, tokenBox } from "./common.js";

const token = tokenBox("caas.operator.token");
const call = (method, path, body) => api(token(), method, path, body);
const idem = () => ({ "Idempotency-Key": crypto.randomUUID() });

function section(id, content) {
  $(id).replaceChildren(...[content].flat());
}

function failed(id, error) {
  section(id, el("p", { class: "bad" }, String(error.message)));
}

async function action(label, run) {
  busy(true);
  status(`${label}…`);
  try {
    await run();
    status(`${label}: done.`);
    await refresh();
  } catch (error) {
    status(`${label}: ${error.message}`, "error");
  } finally {
    busy(false);
  }
}

// HealthStatus (the seed's shape): status, checkedAt, smeServices and caasServices by name.
async function loadHealth() {
  try {
    const health = await call("GET", "/v1/health");
    const good = (value) => ["healthy", "ok", "ready"].includes(String(value));
    const components = [
      ...Object.entries(health.smeServices || {}).map(([name, c]) => [`SME ${name}`, c]),
      ...Object.entries(health.caasServices || {}).map(([name, c]) => [name, c]),
    ];
    section("#health", [
      el("p", {}, "Overall: ", el("strong", { id: "overall", class: good(health.status) ? "ok" : "bad" }, String(health.status)), ` (checked ${health.checkedAt ?? ""})`),
      table(
        ["Component", "Status", "Latency (ms)", "Detail"],
        components.map(([name, c]) => [
          name,
          el("span", { class: good(c?.status ?? c) ? "ok" : "bad" }, String(c?.status ?? c)),
          c?.latency_ms ?? "",
          c?.detail ? JSON.stringify(c.detail) : "",
        ]),
      ),
    ]);
  } catch (error) {
    failed("#health", error);
  }
}

async function loadPayouts() {
  try {
    const flags = (await call("GET", "/v1/monitoring/flags")).data.filter((f) => f.loan_id);
    const loans = [...new Set(flags.map((f) => f.loan_id))];
    const payouts = await Promise.all(loans.map((id) => call("GET", `/v1/payouts/${id}`)));
    section(
      "#payouts",
      payouts.length
        ? table(
            ["Loan", "Status", "Flags", "Last error", "Actions"],
            payouts.map((p, i) => [
              el("code", {}, loans[i]),
              el("span", { "data-payout-status": loans[i] }, p.status),
              flags.filter((f) => f.loan_id === loans[i]).map((f) => f.rule).join(", "),
              p.last_error ?? "",
              el(
                "span",
                {},
                el("button", { type: "button", "data-release": loans[i], onclick: () => action(`Release payout ${loans[i]}`, () => call("POST", `/v1/payouts/${loans[i]}/release`)) }, "Release"),
                el("button", { type: "button", "data-retry": loans[i], onclick: () => action(`Retry payout ${loans[i]}`, () => call("POST", `/v1/payouts/${loans[i]}/retry`)) }, "Retry"),
              ),
            ]),
          )
        : el("p", {}, "No payout is held for review."),
    );
  } catch (error) {
    failed("#payouts", error);
  }
}

async function loadUnmatched() {
  try {
    const payments = (await call("GET", "/v1/payments?status=unmatched&limit=100")).data;
    section(
      "#unmatched",
      payments.length
        ? table(
            ["Reference", "Amount", "Received", "Match to loan"],
            payments.map((p) => {
              const inputId = `match-${p.id}`;
              const form = el(
                "form",
                {
                  "data-payment": p.reference,
                  onsubmit: (event) => {
                    event.preventDefault();
                    const loanId = $(`#${CSS.escape(inputId)}`).value.trim();
                    action(`Match ${p.reference}`, () => api(token(), "POST", `/v1/payments/${p.id}/match`, { loan_id: loanId }, idem()));
                  },
                },
                el("label", { for: inputId }, `Loan id for ${p.reference}`),
                el("input", { id: inputId, required: true, pattern: "[0-9a-fA-F\\-]{36}" }),
                el("button", { type: "submit" }, "Match"),
              );
              return [el("code", {}, p.reference), p.amount ? `${p.amount.value ?? p.amount} ${p.amount.currency ?? ""}` : "", p.received_at ?? p.created_at ?? "", form];
            }),
          )
        : el("p", {}, "No unmatched money."),
    );
  } catch (error) {
    failed("#unmatched", error);
  }
}

async function loadDeadLetters() {
  try {
    const page = await call("GET", "/v1/operations/dead-letters");
    const rows = page.data || [];
    section(
      "#dead",
      rows.length
        ? table(
            ["Group", "Message", "Event", "Actions"],
            rows.map((d) => [
              d.group,
              el("code", {}, d.message_id),
              d.event_type ?? d.fields?.type ?? "",
              el("button", { type: "button", onclick: () => action(`Requeue ${d.message_id}`, () => call("POST", `/v1/operations/dead-letters/${d.group}/${d.message_id}/requeue`)) }, "Requeue"),
            ]),
          )
        : el("p", {}, "No dead letters."),
    );
  } catch (error) {
    failed("#dead", error);
  }
}

async function loadAudit() {
  try {
    const entries = (await call("GET", "/v1/audit/log?limit=20")).data;
    section("#audit", table(["When", "Actor", "Action", "Subject"], entries.map((e) => [e.occurred_at, e.actor, e.action, `${e.subject_type} ${e.subject_id}`])));
  } catch (error) {
    failed("#audit", error);
  }
}

async function refresh() {
  if (!token()) return;
  busy(true);
  try {
    await Promise.all([loadHealth(), loadPayouts(), loadUnmatched(), loadDeadLetters(), loadAudit()]);
  } finally {
    busy(false);
  }
}

$("#cob-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const date = $("#cob-date").value;
  action(`Close of business ${date}`, async () => {
    const run = await api(token(), "POST", "/v1/collections/cob-runs", date ? { business_date: date } : {}, idem());
    section("#runs", el("pre", { tabindex: "0", id: "cob-result" }, JSON.stringify(run, null, 2)));
  });
});
$("#recon").addEventListener("click", () =>
  action("Reconciliation", async () => {
    const run = await call("POST", "/v1/ledger/reconciliation/runs");
    section("#runs", el("pre", { tabindex: "0", id: "recon-result" }, JSON.stringify(run, null, 2)));
  }),
);
$("#refresh").addEventListener("click", refresh);
document.addEventListener("identity", refresh);
refresh();
