// RFC 8785 (JCS) for the values an agreement holds, as offchain/domain/offers/agreement.py writes
// it: keys sorted by UTF-16 code units (JavaScript's default sort), strings as JSON.stringify
// escapes them, integers only (floats are refused there and here).
import { keccak256, stringToBytes } from "viem";

export function canonicalJson(value) {
  if (value === null) return "null";
  if (value === true) return "true";
  if (value === false) return "false";
  if (typeof value === "number") {
    if (!Number.isSafeInteger(value)) throw new Error(`not a safe integer: ${value}`);
    return String(value);
  }
  if (typeof value === "string") return JSON.stringify(value);
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (typeof value === "object") {
    const keys = Object.keys(value).sort();
    return `{${keys.map((k) => `${JSON.stringify(k)}:${canonicalJson(value[k])}`).join(",")}}`;
  }
  throw new Error(`not a JSON value: ${typeof value}`);
}

export const termsHashOf = (document) => keccak256(stringToBytes(canonicalJson(document)));

// payout_ref = keccak256(utf8 "<method>:<bank_code>:<account_number>")
export const payoutRefOf = (payout) =>
  keccak256(stringToBytes(`${payout.method}:${payout.bank_code}:${payout.account_number}`));
