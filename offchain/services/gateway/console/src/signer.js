// Signer console: check what is signed against the chain itself, then sign with an EIP-1193 wallet.
import { encodeFunctionData, getAddress, hashDomain, hashStruct, hashTypedData, hexToBigInt, hexToString, trim } from "viem";
import { $, api, busy, chainClient, config, el, status, table, tokenBox } from "./common.js";
import { payoutRefOf, termsHashOf } from "./canonical.js";

const token = tokenBox("caas.signer.token");
const FIELDS = [
  { name: "loanId", type: "bytes32" },
  { name: "termsHash", type: "bytes32" },
  { name: "currency", type: "uint16" },
  { name: "principal", type: "uint256" },
  { name: "totalDue", type: "uint256" },
  { name: "installmentCount", type: "uint16" },
  { name: "installmentInterval", type: "uint32" },
  { name: "gracePeriod", type: "uint32" },
  { name: "maxLateFees", type: "uint256" },
  { name: "payoutRef", type: "bytes32" },
  { name: "epoch", type: "uint256" },
  { name: "deadline", type: "uint256" },
];
const DOMAIN_TYPE = [
  { name: "name", type: "string" },
  { name: "version", type: "string" },
  { name: "chainId", type: "uint256" },
  { name: "verifyingContract", type: "address" },
];
let account = null;

async function connectWallet() {
  if (!window.ethereum) {
    status("No EIP-1193 wallet found in this browser (MetaMask, Rabby, Frame).", "error");
    return;
  }
  const accounts = await window.ethereum.request({ method: "eth_requestAccounts" });
  account = getAddress(accounts[0]);
  $("#account").textContent = account;
  status(`Wallet connected: ${account}`);
}

async function loadLoans() {
  if (!token()) return;
  busy(true);
  try {
    const page = await api(token(), "GET", "/v1/loans?status=pending_approval&limit=100");
    const list = $("#loans");
    list.replaceChildren();
    if (!page.data.length) list.append(el("p", {}, "No loan is awaiting approval."));
    list.append(
      table(
        ["Loan", "Principal", "Total due", ""],
        page.data.map((loan) => [
          el("code", {}, loan.id),
          loan.principal ? `${loan.principal.value} ${loan.principal.currency}` : "",
          loan.total_due ? `${loan.total_due.value} ${loan.total_due.currency}` : "",
          el("button", { type: "button", class: "review", "data-loan": loan.id, onclick: () => review(loan.id) }, "Review"),
        ]),
      ),
    );
    status(`${page.data.length} loan(s) awaiting approval.`);
  } catch (error) {
    status(String(error.message), "error");
  } finally {
    busy(false);
  }
}

function check(label, local, reference, referenceLabel) {
  const ok = local.toLowerCase() === reference.toLowerCase();
  return { label, local, reference, referenceLabel, ok };
}

async function review(loanId) {
  busy(true);
  status("Reading the agreement from the gateway and the terms from the chain…");
  const panel = $("#review");
  panel.replaceChildren();
  try {
    const cfg = await config();
    const client = await chainClient();
    const [doc, request] = await Promise.all([
      api(token(), "GET", `/console/api/loans/${loanId}/agreement`),
      api(token(), "GET", `/v1/loans/${loanId}/approval-request`),
    ]);
    const chainLoanId = doc.chain_loan_id;
    const deadline = BigInt(request.deadline);
    const book = { address: cfg.loan_book.address, abi: cfg.loan_book.abi };
    const committee = { address: cfg.committee.address, abi: cfg.committee.abi };
    const block = await client.getBlockNumber();
    const [terms, epoch, required, chainDigest] = await Promise.all([
      client.readContract({ ...book, functionName: "approval_terms", args: [chainLoanId], blockNumber: block }),
      client.readContract({ ...committee, functionName: "epoch", blockNumber: block }),
      client.readContract({ ...committee, functionName: "required_approvals", args: [chainLoanId], blockNumber: block }),
      client.readContract({ ...committee, functionName: "approval_digest", args: [chainLoanId, deadline], blockNumber: block }),
    ]);
    const chainId = await client.getChainId();
    // The typed data built here from the chain's own terms, not taken from the server.
    const typedData = {
      types: { EIP712Domain: DOMAIN_TYPE, ApproveDisbursement: FIELDS },
      primaryType: "ApproveDisbursement",
      domain: {
        name: "CaaS Disbursement Committee",
        version: "1",
        chainId,
        verifyingContract: getAddress(cfg.committee.address),
      },
      message: {
        loanId: chainLoanId,
        termsHash: terms.terms_hash,
        currency: terms.currency,
        principal: terms.principal,
        totalDue: terms.total_due,
        installmentCount: terms.installment_count,
        installmentInterval: terms.installment_interval,
        gracePeriod: terms.grace_period,
        maxLateFees: terms.max_late_fees,
        payoutRef: terms.payout_ref,
        epoch,
        deadline,
      },
    };
    const localDigest = hashTypedData(typedData);
    const serverDigest = hashTypedData(request.typed_data);
    const agreement = doc.agreement;
    const checks = [
      check("terms_hash recomputed from the agreement", termsHashOf(agreement), terms.terms_hash, "LoanBook.approval_terms"),
      check("payout_ref recomputed from the agreement's payout", payoutRefOf(agreement.payout), terms.payout_ref, "LoanBook.approval_terms"),
      check("principal in the agreement", String(agreement.principal.value), String(terms.principal), "on chain"),
      check("total due in the agreement", String(agreement.total_due.value), String(terms.total_due), "on chain"),
      check("instalments in the agreement", String(agreement.installment_count), String(terms.installment_count), "on chain"),
      check("EIP-712 digest computed in this page", localDigest, chainDigest, "committee.approval_digest"),
      check("EIP-712 digest of the server's typed data", serverDigest, chainDigest, "committee.approval_digest"),
    ];
    const allOk = checks.every((c) => c.ok);
    panel.append(
      el("h2", { id: "review-title", tabindex: "-1" }, `Loan ${loanId}`),
      el(
        "dl",
        { class: "facts" },
        el("dt", {}, "Chain loan id"), el("dd", {}, el("code", {}, chainLoanId)),
        el("dt", {}, "Payout account"), el("dd", { id: "payout-account" }, `${doc.payout.method} ${doc.payout.bank_code ?? ""} ${doc.payout.account_masked}`),
        el("dt", {}, "payout_ref"), el("dd", {}, el("code", {}, doc.payout.payout_ref)),
        el("dt", {}, "Approvals"), el("dd", { id: "approvals" }, `${request.approvals} of ${required} (${request.signed_by.join(", ") || "none yet"})`),
        el("dt", {}, "Committee epoch"), el("dd", { id: "epoch" }, String(epoch)),
        el("dt", {}, "Deadline"), el("dd", {}, new Date(Number(deadline) * 1000).toISOString()),
        el("dt", {}, "Read at block"), el("dd", {}, String(block)),
      ),
      el("h3", {}, "Checks"),
      table(
        ["Check", "Computed here", "Reference", "Result"],
        checks.map((c) => [
          c.label,
          el("code", {}, c.local),
          el("span", {}, el("code", {}, c.reference), ` (${c.referenceLabel})`),
          el("strong", { class: c.ok ? "ok" : "bad", "data-check": c.ok ? "ok" : "mismatch" }, c.ok ? "match" : "MISMATCH"),
        ]),
      ),
      el("h3", {}, "Compare on your hardware wallet"),
      el(
        "dl",
        { class: "facts", id: "hashes" },
        el("dt", {}, "Domain hash"), el("dd", { id: "domain-hash" }, el("code", {}, hashDomain({ domain: typedData.domain, types: typedData.types }))),
        el("dt", {}, "Message hash"), el("dd", { id: "message-hash" }, el("code", {}, hashStruct({ data: typedData.message, primaryType: "ApproveDisbursement", types: typedData.types }))),
        el("dt", {}, "EIP-712 digest"), el("dd", { id: "digest" }, el("code", {}, localDigest)),
      ),
      el("h3", {}, "Agreement (as the gateway stores it)"),
      el("pre", { id: "agreement", tabindex: "0" }, JSON.stringify(shown(agreement, doc.payout.account_masked), null, 2)),
    );
    const button = el("button", { type: "button", id: "sign", disabled: !allOk }, "Sign approval with wallet");
    panel.append(button);
    if (!allOk) {
      panel.append(el("p", { id: "refusal", class: "bad", role: "alert" }, "Refusing to sign: what the server shows differs from the chain."));
      status("Mismatch: this page will not sign this loan.", "error");
    } else {
      status("Every check matches the chain. Review the terms, then sign.");
      button.addEventListener("click", () => sign(loanId, typedData, deadline));
    }
    $("#review-title").focus();
  } catch (error) {
    status(String(error.message), "error");
  } finally {
    busy(false);
  }
}

// Wallets take the typed data as JSON: numbers where exact (agreements keep amounts below 2**53).
// The agreement as shown: the account number masked (the hash above is over the stored document).
const shown = (agreement, masked) => ({ ...agreement, payout: { ...agreement.payout, account_number: masked } });

const jsonSafe = (typed) =>
  JSON.stringify(typed, (_k, v) => (typeof v === "bigint" ? (v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v.toString()) : v));

async function sign(loanId, typedData, deadline) {
  if (!account) await connectWallet();
  if (!account) return;
  busy(true);
  status("Waiting for the wallet's signature…");
  try {
    const signature = await window.ethereum.request({ method: "eth_signTypedData_v4", params: [account, jsonSafe(typedData)] });
    status("Submitting the approval…");
    const result = await api(token(), "POST", `/v1/loans/${loanId}/approvals`, {
      signer: account,
      signature,
      deadline: Number(deadline),
    });
    const out = el("p", { id: "result", role: "status" }, `Approval kept: ${result.approvals} of ${result.required}; state ${result.state}`,
      result.tx_intent ? ` (tx intent ${result.tx_intent})` : "");
    $("#review").append(out);
    status(result.submitted ? "Threshold reached: approve_with_signatures submitted." : "Approval kept.");
    if (result.submitted) watchApproved(loanId);
  } catch (error) {
    status(String(error.message), "error");
  } finally {
    busy(false);
  }
}

async function watchApproved(loanId) {
  status("Waiting for approve_with_signatures to be mined…");
  busy(true);
  try {
    for (let i = 0; i < 90; i += 1) {
      const loan = await api(token(), "GET", `/v1/loans/${loanId}`);
      const tx = (loan.transactions || []).find((t) => t.event === "LoanApproved");
      if (tx) {
        $("#review").append(
          el("p", { id: "executed", role: "status" }, `APPROVED on chain in tx ${tx.tx_hash} (block ${tx.block_number}); the loan is now ${loan.chain_state}`),
        );
        status("The committee's approval is on chain.");
        return;
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    status("approve_with_signatures not mined yet: reload later.", "error");
  } finally {
    busy(false);
  }
}


// -- governance: the committee's proposals, decoded ------------------------------------------------

const ACTIONS = {
  1: (p) => `Add signer ${p.target}; threshold becomes ${p.value}`,
  2: (p) => `Remove signer ${p.target}; threshold becomes ${p.value}`,
  3: (p) => `Set the approval threshold to ${p.value}`,
  4: (p) => `Large-loan tier: ${p.value} approvals for a principal of at least ${hexToBigInt(p.arg)} (minor units)`,
  5: (p) => `Write off loan ${p.arg}`,
  6: (p) => `Cancel loan ${p.arg} (reason ${reason(p.value)})`,
  7: () => "Pause LoanBook (no new loans, approvals or disbursements)",
  8: () => "Unpause LoanBook",
  9: (p) => `Grant role ${p.arg} on LoanBook to ${p.target}`,
  10: (p) => `Revoke role ${p.arg} on LoanBook from ${p.target}`,
};

function reason(value) {
  const hex = `0x${BigInt(value).toString(16).padStart(64, "0")}`;
  try {
    const text = hexToString(trim(hex, { dir: "right" }));
    return /^[\x20-\x7e]+$/.test(text) ? `"${text}"` : hex;
  } catch {
    return hex;
  }
}

export const describeProposal = (p) => (ACTIONS[p.action] ?? (() => `unknown action ${p.action}`))(p);

async function sendFromWallet(functionName, args) {
  if (!account) await connectWallet();
  const cfg = await config();
  const data = encodeFunctionData({ abi: cfg.committee.abi, functionName, args });
  busy(true);
  status(`Waiting for the wallet to send ${functionName}…`);
  try {
    const hash = await window.ethereum.request({ method: "eth_sendTransaction", params: [{ from: account, to: cfg.committee.address, data }] });
    const client = await chainClient();
    await client.waitForTransactionReceipt({ hash });
    status(`${functionName} mined in ${hash}.`);
    await loadProposals();
  } catch (error) {
    status(String(error.message), "error");
  } finally {
    busy(false);
  }
}

async function loadProposals() {
  const box = $("#proposals");
  try {
    const cfg = await config();
    const client = await chainClient();
    const committee = { address: cfg.committee.address, abi: cfg.committee.abi };
    const block = await client.getBlockNumber();
    const read = (functionName, args = []) => client.readContract({ ...committee, functionName, args, blockNumber: block });
    const [count, epoch, threshold, head] = await Promise.all([read("proposal_count"), read("epoch"), read("threshold"), client.getBlock({ blockNumber: block })]);
    const ids = [];
    for (let id = count; id >= 1n && ids.length < 20; id -= 1n) ids.push(id);
    const proposals = await Promise.all(ids.map(async (id) => ({ id, ...(await read("proposals", [id])), confirmed: await read("confirmations", [id]) })));
    box.replaceChildren(
      el("p", {}, `Committee epoch ${epoch}, threshold ${threshold}, ${count} proposal(s).`),
      proposals.length
        ? table(
            ["#", "What it changes", "Confirmations", "Epoch", "Expires", "State", ""],
            proposals.map((p) => {
              const open = !p.executed && p.epoch === epoch && p.expires_at >= head.timestamp;
              return [
                String(p.id),
                el("span", { "data-proposal": String(p.id) }, describeProposal(p)),
                `${p.confirmed} of ${threshold}`,
                String(p.epoch),
                new Date(Number(p.expires_at) * 1000).toISOString(),
                p.executed ? "executed" : open ? "open" : "stale",
                open
                  ? el(
                      "span",
                      {},
                      el("button", { type: "button", "data-confirm": String(p.id), onclick: () => sendFromWallet("confirm", [p.id]) }, `Confirm #${p.id}`),
                      el("button", { type: "button", "data-execute": String(p.id), disabled: p.confirmed < threshold, onclick: () => sendFromWallet("execute", [p.id]) }, `Execute #${p.id}`),
                    )
                  : "",
              ];
            }),
          )
        : el("p", {}, "No proposals."),
    );
  } catch (error) {
    box.replaceChildren(el("p", { class: "bad" }, String(error.message)));
  }
}

$("#connect").addEventListener("click", () => connectWallet().catch((e) => status(String(e.message), "error")));
document.addEventListener("identity", loadLoans);
loadLoans();
loadProposals();
