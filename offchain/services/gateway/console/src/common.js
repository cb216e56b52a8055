// Shared by the three consoles: config, the gateway API under the pasted identity, the chain.
import { createPublicClient, http } from "viem";

export const $ = (selector) => document.querySelector(selector);

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "class") node.className = value;
    else if (key.startsWith("on")) node.addEventListener(key.slice(2), value);
    else if (value !== undefined && value !== null && value !== false) node.setAttribute(key, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

export function status(message, kind = "info") {
  const box = $("#status");
  box.textContent = message;
  box.dataset.kind = kind;
}

export function busy(on) {
  document.body.setAttribute("aria-busy", on ? "true" : "false");
  const spinner = $("#progress");
  if (spinner) spinner.hidden = !on;
}

let configPromise;
export function config() {
  configPromise ??= fetch("/console/api/config").then((r) => r.json());
  return configPromise;
}

export async function chainClient() {
  const cfg = await config();
  const rpc = sessionStorage.getItem("caas.rpc") || cfg.rpc_url;
  return createPublicClient({ transport: http(rpc) });
}

// The identity pasted on the page (a partner or operator bearer token): the tab's sessionStorage.
export function tokenBox(storageKey) {
  const input = $("#token");
  input.value = sessionStorage.getItem(storageKey) || "";
  $("#token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    sessionStorage.setItem(storageKey, input.value.trim());
    document.dispatchEvent(new CustomEvent("identity"));
  });
  return () => sessionStorage.getItem(storageKey) || "";
}

export async function api(token, method, path, body, extraHeaders = {}) {
  const headers = { Accept: "application/json", ...extraHeaders };
  if (token) headers.Authorization = `Bearer ${token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  const text = await response.text();
  let data = null;
  try {
    data = text ? JSON.parse(text) : null;
  } catch {
    data = { detail: text };
  }
  if (!response.ok) {
    const error = new Error(`${method} ${path}: ${response.status} ${data?.detail || data?.title || ""}`);
    error.status = response.status;
    error.body = data;
    throw error;
  }
  return data;
}

export function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, rows.map((row) => el("tr", {}, row.map((cell) => el("td", {}, cell))))),
  );
}
