// The balance page's rendering of refunded payments (clearing/README.md "Balance page", ISO8583.md §4.10),
// in both languages: the page's own script (clearing/daemon/src/http_page.cpp) run under node with a minimal
// document, its rowItem() given the rows GET /v1/cards/{n}/history answers for a refunded visit, a purchase
// refunded in cash and a visit whose refund credit is pending.
//
// Usage: node test_balance_page_refunds.js REPOSITORY
"use strict";
const assert = require("assert");
const fs = require("fs");
const path = require("path");
const vm = require("vm");

const source = fs.readFileSync(path.join(process.argv[2], "clearing/daemon/src/http_page.cpp"), "utf8");
const script = /<script>([\s\S]*?)<\/script>/.exec(source)[1];

// Just enough of the DOM for the page's script: elements with children, text, classes and attributes.
class Element {
  constructor(tag) { this.tag = tag; this.children = []; this.dataset = {}; this.attributes = {}; this.textContent = ""; }
  appendChild(child) { this.children.push(child); return child; }
  replaceChildren() { this.children = []; }
  setAttribute(name, value) { this.attributes[name] = value; }
  addEventListener() {}
  get text() { return this.textContent + this.children.map((c) => c.text).join(""); }
}
const elements = new Map();
const document = {
  documentElement: new Element("html"),
  getElementById: (id) => { if (!elements.has(id)) elements.set(id, new Element("div")); return elements.get(id); },
  createElement: (tag) => new Element(tag),
};
const context = vm.createContext({
  document, navigator: { languages: ["zh-CN"] }, location: { hash: "", pathname: "/" },
  sessionStorage: { getItem: () => null, setItem: () => {}, removeItem: () => {} },
  history: { replaceState: () => {} }, fetch: () => { throw new Error("no network in this test"); }, URLSearchParams,
});
vm.runInContext(script + "\nglobalThis.page = { rowItem, use: (l) => { lang = l; T = texts[l]; } };", context);
const page = context.page;

const visit = {
  id: "00", kind: "clinic_visit", state: "refunded", time: "2026-12-06T10:30+08:00", time_source: "terminal",
  place: { participant: "Haikou Clinic" }, amount_fen: 0,
  parts: [
    { account: "medical", amount_fen: -8000, state: "posted", held_fen: 8000 },
    { account: "purse", amount_fen: -1000, state: "posted" },
    { account: "medical", amount_fen: 8000, state: "posted", refund: true },
    { account: "purse", amount_fen: 1000, state: "posted", refund: true },
  ],
  refund: { medical_fen: 8000, purse_fen: 1000, purse_to: "card" },
};
const cash = {
  id: "01", kind: "clinic", state: "refunded", time: "2026-12-06T11:00+08:00", time_source: "card", place: {}, amount_fen: -500,
  parts: [{ account: "purse", amount_fen: -500, state: "posted" }], refund: { purse_fen: 500, purse_to: "cash" },
};
const pending = Object.assign({}, visit, {
  state: "refund_pending", amount_fen: 0,
  parts: visit.parts.map((p, i) => (i === 3 ? Object.assign({}, p, { state: "pending" }) : p)),
});
const partly = Object.assign({}, visit, { state: "partly_refunded", amount_fen: -1000, parts: visit.parts.slice(0, 3) });

function partTexts(li) { return li.children.find((c) => c.className === "parts").children.map((c) => c.textContent); }
function title(li) { return li.children[0].children[0].textContent; }

page.use("zh");
let li = page.rowItem(visit);
assert.strictEqual(title(li), "门诊就医 (已退款)");
assert.strictEqual(li.dataset.state, "refunded");
assert.deepStrictEqual(partTexts(li),
  ["医保个人账户: -¥80.00", "电子钱包: -¥10.00", "退回医保个人账户: ¥80.00", "退回电子钱包: ¥10.00"]);
li = page.rowItem(cash);
assert.strictEqual(title(li), "诊所消费 (已退款)");
assert.deepStrictEqual(partTexts(li), ["电子钱包: -¥5.00", "电子钱包部分已现金退还：¥5.00"]);
assert.strictEqual(title(page.rowItem(pending)), "门诊就医 (退款处理中)");
assert.strictEqual(partTexts(page.rowItem(pending))[3], "退回电子钱包: ¥10.00 (处理中)");
assert.strictEqual(title(page.rowItem(partly)), "门诊就医 (部分退款)");

page.use("en");
li = page.rowItem(visit);
assert.strictEqual(title(li), "Clinic visit (refunded)");
assert.deepStrictEqual(partTexts(li),
  ["Medical account: -¥80.00", "Purse: -¥10.00", "Refund to medical account: ¥80.00", "Refund to purse: ¥10.00"]);
assert.deepStrictEqual(partTexts(page.rowItem(cash)), ["Purse: -¥5.00", "Purse part refunded in cash: ¥5.00"]);
assert.strictEqual(title(page.rowItem(pending)), "Clinic visit (refund pending)");
assert.strictEqual(title(page.rowItem(partly)), "Clinic visit (partly refunded)");
console.log("ok  refunded, refund pending, partly refunded and cash refunds rendered in zh and en");
