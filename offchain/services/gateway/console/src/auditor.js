// Auditor console: the loan book read from the chain in this browser, its event chains recomputed
// from the raw logs, and the backend's copy of the events beside it with every difference marked.
import { concat, decodeEventLog, keccak256, toEventSelector } from "viem";
import { $, api, busy, config, el, status, table } from "./common.js";
import { createPublicClient, http } from "viem";

const STATES = ["NONE", "PENDING", "APPROVED", "ACTIVE", "REPAID", "DEFAULTED", "WRITTEN_OFF", "CANCELLED"];
const ZERO = `0x${"00".repeat(32)}`;
let rows = [];

function recompute(logs) {
  return logs.reduce((head, log) => keccak256(concat([head, ...log.topics, log.data])), ZERO);
}

const plain = (value) => (typeof value === "bigint" ? value.toString() : typeof value === "string" ? value.toLowerCase() : String(value));

function decoded(abi, log) {
  try {
    const event = decodeEventLog({ abi, data: log.data, topics: log.topics });
    return { name: event.eventName, args: event.args };
  } catch {
    return { name: "unknown", args: {} };
  }
}

// The backend's event beside the chain's: same name, transaction, log index and arguments.
// (The backend also keeps the committee's events of the loan: only LoanBook's are compared.)
function compareEvents(chainEvents, backendAll, bookEvents) {
  const problems = [];
  const backendEvents = backendAll.filter((e) => bookEvents.has(e.event));
  const byKey = new Map(backendEvents.map((e) => [`${e.tx_hash.toLowerCase()}:${e.log_index}`, e]));
  for (const event of chainEvents) {
    const key = `${event.tx_hash.toLowerCase()}:${event.log_index}`;
    const theirs = byKey.get(key);
    byKey.delete(key);
    if (!theirs) {
      problems.push(`${event.name} at ${key} missing from the backend`);
      continue;
    }
    if (theirs.event !== event.name) problems.push(`${key}: backend says ${theirs.event}, chain ${event.name}`);
    for (const [name, value] of Object.entries(event.args)) {
      if (!(name in (theirs.args || {}))) continue;
      if (plain(theirs.args[name]) !== plain(value)) {
        problems.push(`${event.name}.${name}: backend ${theirs.args[name]}, chain ${plain(value)}`);
      }
    }
  }
  for (const [key, extra] of byKey) problems.push(`${extra.event} at ${key} is in the backend only`);
  return problems;
}

async function backendLoans(token) {
  const out = new Map();
  if (!token) return out;
  let cursor = null;
  do {
    const page = await api(token, "GET", `/v1/loans?limit=100${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ""}`);
    for (const loan of page.data) out.set(loan.chain_loan_id.toLowerCase(), loan.id);
    cursor = page.next_cursor;
  } while (cursor);
  return out;
}

async function audit(event) {
  event?.preventDefault();
  busy(true);
  status("Reading the loan book's logs from the chain…");
  try {
    const cfg = await config();
    const rpc = $("#rpc").value || cfg.rpc_url;
    const client = createPublicClient({ transport: http(rpc) });
    const at = BigInt(Math.floor(new Date(`${$("#asof").value}T23:59:59Z`).getTime() / 1000));
    const book = { address: cfg.loan_book.address, abi: cfg.loan_book.abi };
    // Every read pinned to one block: a loan moving meanwhile cannot make logs and views disagree.
    const block = await client.getBlockNumber();
    const logs = await client.getLogs({ address: book.address, fromBlock: BigInt(cfg.loan_book.block), toBlock: block });
    // A loan's events are those whose first indexed topic is `loan_id` (the others are admin events).
    const loanEvents = book.abi.filter((item) => item.type === "event" && item.inputs[0]?.name === "loan_id" && item.inputs[0].indexed);
    const bookEvents = new Set(loanEvents.map((item) => item.name));
    const loanTopics = new Set(loanEvents.map((item) => toEventSelector(item)));
    const perLoan = new Map();
    for (const log of logs) {
      if (!loanTopics.has(log.topics[0])) continue;
      const id = log.topics[1];
      if (!perLoan.has(id)) perLoan.set(id, []);
      perLoan.get(id).push(log);
    }
    const token = $("#token").value.trim();
    const backend = await backendLoans(token).catch((error) => {
      status(`Backend view unavailable: ${error.message}`, "error");
      return new Map();
    });
    rows = [];
    let done = 0;
    for (const [loanId, loanLogs] of perLoan) {
      loanLogs.sort((a, b) => (a.blockNumber === b.blockNumber ? a.logIndex - b.logIndex : Number(a.blockNumber - b.blockNumber)));
      const read = (functionName, args) => client.readContract({ ...book, functionName, args, blockNumber: block });
      const [state, outstanding, due, dpd, onChainHead] = await Promise.all([
        read("loan_state", [loanId]),
        read("outstanding", [loanId]),
        read("amount_due", [loanId, at]),
        read("days_past_due", [loanId, at]),
        read("event_chain", [loanId]),
      ]);
      const head = recompute(loanLogs);
      const chainEvents = loanLogs.map((log) => ({ ...decoded(book.abi, log), tx_hash: log.transactionHash, log_index: log.logIndex }));
      const backendId = backend.get(loanId.toLowerCase());
      const theirs = backendId ? await api(token, "GET", `/v1/loans/${backendId}`) : null;
      const problems = theirs ? compareEvents(chainEvents, theirs.transactions || [], bookEvents) : [];
      rows.push({
        loanId,
        backendId: theirs?.id ?? "",
        state: STATES[Number(state)] ?? String(state),
        outstanding: outstanding.toString(),
        due: due.toString(),
        dpd: dpd.toString(),
        events: loanLogs.length,
        chainOk: head.toLowerCase() === onChainHead.toLowerCase(),
        head,
        onChainHead,
        backendState: theirs?.chain_state ?? (token ? "not in backend" : "no token"),
        problems,
      });
      done += 1;
      status(`Recomputing event chains… ${done} of ${perLoan.size}`);
    }
    render();
    const bad = rows.filter((r) => !r.chainOk || r.problems.length || (r.backendState !== r.state && token)).length;
    status(`${rows.length} loan(s) read from the chain at block ${block}; ${bad} with a mismatch.`, bad ? "error" : "info");
    $("#csv").disabled = rows.length === 0;
  } catch (error) {
    status(String(error.message), "error");
  } finally {
    busy(false);
  }
}

function render() {
  $("#book").replaceChildren(
    table(
      ["Loan (chain id)", "State", "Outstanding", "Amount due", "Days past due", "Events", "event_chain", "Backend state", "Backend events"],
      rows.map((r) => {
        const stateMismatch = r.backendState !== r.state && !["no token", "not in backend"].includes(r.backendState);
        return [
          el("code", {}, r.loanId),
          r.state,
          r.outstanding,
          r.due,
          r.dpd,
          String(r.events),
          el("strong", { class: r.chainOk ? "ok" : "bad", "data-chain": r.chainOk ? "ok" : "mismatch" }, r.chainOk ? "recomputed = on chain" : `MISMATCH: recomputed ${r.head}, LoanBook.event_chain ${r.onChainHead}`),
          el("span", { class: stateMismatch ? "bad" : "", "data-backend-state": stateMismatch ? "mismatch" : "ok" }, r.backendState),
          r.problems.length
            ? el("ul", { class: "bad", "data-backend": "mismatch", "data-loan": r.backendId }, r.problems.map((p) => el("li", {}, p)))
            : el("span", { class: "ok", "data-backend": "ok", "data-loan": r.backendId }, r.backendId ? "match" : "—"),
        ];
      }),
    ),
  );
}

function exportCsv() {
  const header = ["chain_loan_id", "backend_loan_id", "state", "outstanding", "amount_due", "days_past_due", "events", "event_chain_ok", "backend_state", "backend_mismatches"];
  const quote = (v) => `"${String(v).replaceAll('"', '""')}"`;
  const lines = [header.join(",")].concat(
    rows.map((r) => [r.loanId, r.backendId, r.state, r.outstanding, r.due, r.dpd, r.events, r.chainOk, r.backendState, r.problems.join("; ")].map(quote).join(",")),
  );
  const blob = new Blob([`${lines.join("\n")}\n`], { type: "text/csv" });
  const link = el("a", { href: URL.createObjectURL(blob), download: `loan-book-${$("#asof").value}.csv` });
  document.body.append(link);
  link.click();
  link.remove();
}

(async () => {
  const cfg = await config();
  $("#rpc").value = cfg.rpc_url || "";
  $("#asof").value = new Date().toISOString().slice(0, 10);
  $("#token").value = sessionStorage.getItem("caas.auditor.token") || "";
  $("#token").addEventListener("change", () => sessionStorage.setItem("caas.auditor.token", $("#token").value.trim()));
  $("#audit-form").addEventListener("submit", audit);
  $("#csv").addEventListener("click", exportCsv);
})();
