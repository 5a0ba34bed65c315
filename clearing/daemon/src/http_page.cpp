// The balance page served at / : one self-contained HTML document (no external resource: the
// Content-Security-Policy forbids any), in Chinese and English (Chinese when the browser prefers it; a
// switch at the top), readable on a 360-px phone and with a screen reader. It signs in one of two ways:
//   - an activation letter's link /#code=… (coconut card letters; the fragment never reaches the server
//     or its logs): the code is exchanged once (POST /v1/activate, the code in the body) for the card's
//     token, which the page keeps only in this tab's sessionStorage;
//   - the card number and token typed into the form (or #card=…&token=…).
// It shows the balances (purse and medical account, labelled) and the history from
// GET /v1/cards/{n}/history: one row per visit, journey or payment, the card's own time and place,
// more rows with "Show more" (next_cursor).
#include <coconut/clearing/http.hpp>

namespace coconut::clearing::http {

namespace {

constexpr std::string_view balance_page = R"page(<!doctype html>
<html lang="zh-CN">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>椰岛一卡通 Coconut Card</title>
<style>
  * { box-sizing: border-box; }
  body { font-family: "Noto Sans CJK SC", "Noto Sans SC", sans-serif; margin: 0 auto; padding: 12px; max-width: 560px; color: #1a1a1a; background: #fafaf5; line-height: 1.45; }
  header { display: flex; justify-content: space-between; align-items: center; gap: 8px; }
  h1 { font-size: 1.3em; margin: 0; }
  h2 { font-size: 1.1em; margin: 18px 0 6px; }
  label { display: block; margin-top: 10px; font-weight: bold; }
  input { width: 100%; font-size: 1.1em; padding: 10px; margin-top: 4px; border: 1px solid #666; border-radius: 6px; }
  button { font-size: 1.05em; padding: 12px; margin-top: 12px; border: 0; border-radius: 6px; background: #1f5c42; color: #fff; width: 100%; min-height: 44px; }
  button.link { background: none; color: #1f5c42; border: 1px solid #1f5c42; width: auto; padding: 6px 12px; margin: 0; min-height: 36px; }
  button.secondary { background: #8a1c1c; }
  button:focus, input:focus { outline: 3px solid #e0a100; outline-offset: 2px; }
  .message { margin-top: 14px; padding: 12px; border-radius: 6px; }
  .error { background: #fde2e1; color: #7a1515; }
  .warning { background: #fff3cd; color: #5c4300; }
  .balances { display: flex; gap: 10px; flex-wrap: wrap; }
  .balance-box { flex: 1 1 150px; background: #fff; border: 1px solid #ccc; border-radius: 8px; padding: 10px; }
  .balance-label { color: #444; font-size: 0.95em; }
  .balance { font-size: 1.6em; font-weight: bold; }
  .muted { color: #4a4a4a; font-size: 0.9em; }
  ol#rows { list-style: none; padding: 0; margin: 0; }
  ol#rows li { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: 10px; margin-bottom: 8px; }
  .row-head { display: flex; justify-content: space-between; gap: 8px; }
  .row-title { font-weight: bold; overflow-wrap: anywhere; }
  .amount { font-weight: bold; white-space: nowrap; }
  .credit { color: #1f5c42; }
  .parts { margin: 4px 0 0; padding-left: 18px; font-size: 0.92em; }
  .state-reversed .amount, .state-expired .amount { text-decoration: line-through; color: #555; }
  .sr-only { position: absolute; width: 1px; height: 1px; overflow: hidden; clip: rect(0 0 0 0); white-space: nowrap; }
  form.secondary-form { margin-top: 18px; border-top: 1px solid #ccc; padding-top: 6px; }
</style>
</head>
<body>
<header>
  <h1 id="title"></h1>
  <button type="button" id="switch-lang" class="link" lang="en"></button>
</header>
<main>
<div id="message" class="message" hidden role="alert" aria-live="assertive"></div>
<section id="signin">
  <form id="activate">
    <label for="code" id="code-label"></label>
    <input id="code" name="code" autocomplete="one-time-code" autocapitalize="characters" spellcheck="false" required>
    <button type="submit" id="activate-button"></button>
  </form>
  <form id="lookup" class="secondary-form">
    <label for="card" id="card-label"></label>
    <input id="card" name="card" inputmode="numeric" autocomplete="off" maxlength="16" pattern="[0-9]{16}" required>
    <label for="token" id="token-label"></label>
    <input id="token" name="token" type="password" autocomplete="off" required>
    <button type="submit" id="lookup-button"></button>
  </form>
</section>
<section id="result" hidden aria-labelledby="card-heading">
  <h2 id="card-heading"></h2>
  <div class="balances">
    <div class="balance-box"><div class="balance-label" id="purse-label"></div><div class="balance" id="purse-balance"></div><div class="muted" id="pending"></div></div>
    <div class="balance-box"><div class="balance-label" id="medical-label"></div><div class="balance" id="medical-balance"></div><div class="muted" id="medical-pending"></div></div>
  </div>
  <div id="carried" class="message warning" hidden></div>
  <h2 id="history-heading"></h2>
  <p class="muted" id="history-note"></p>
  <ol id="rows" aria-labelledby="history-heading"></ol>
  <button type="button" id="more" hidden></button>
  <button type="button" id="report-lost" class="secondary"></button>
  <button type="button" id="sign-out" class="link"></button>
</section>
<section id="lost" hidden>
  <div id="lost-status" class="message warning"></div>
  <button type="button" id="found" hidden></button>
</section>
</main>
<script>
"use strict";
const texts = {
  zh: {
    title: "椰岛一卡通", other: "English", code_label: "激活码（见信函）", activate: "激活并查看余额",
    card_label: "卡号（16 位数字）", token_label: "查询令牌", lookup: "查看余额", card: "卡号 ",
    purse: "电子钱包余额", medical: "医保个人账户余额", history: "交易记录",
    note: "时间为刷卡时间（海南时间）。", more: "显示更多", report_lost: "挂失此卡", sign_out: "退出",
    found: "我已找到卡", none: "暂无交易。", nothing_pending: "无待处理款项",
    loads_pending: "入账处理中（充值、退款） ", payments_pending: "支付处理中 ", holds: "门诊预授权 ",
    kinds: { bus_journey: "公交行程", bus: "公交乘车", bus_entry: "公交上车（下车时扣费）", clinic_visit: "门诊就医", clinic: "诊所消费",
             shop: "商店消费", load: "充值", counter: "服务网点", adjustment: "调账", refund: "退款", other: "其他" },
    states: { pending: "处理中", completed: "", posted: "", reversed: "已撤销", expired: "已过期", under_review: "审核中",
              refunded: "已退款", partly_refunded: "部分退款", refund_pending: "退款处理中" },
    accounts: { medical: "医保个人账户", purse: "电子钱包" },
    refund_to: (a) => "退回" + a, refund_cash: (m) => "电子钱包部分已现金退还：" + m,
    line: (n) => n + " 路", stop: (n) => "第 " + n + " 站", journey: (a, b) => "第 " + a + " 站 → 第 " + b + " 站",
    when: (y, mo, d, h, mi) => y + "年" + Number(mo) + "月" + Number(d) + "日 " + h + ":" + mi,
    minus: "支出", plus: "收入",
    wrong: "卡号或令牌不正确，请检查后重试。", too_many: "尝试次数过多，请一分钟后再试。",
    unavailable: (s) => "服务暂不可用（错误 " + s + "），请稍后再试。", offline: "无法连接服务，请检查网络后重试。",
    digits: "卡号为 16 位数字。", blocked: (s) => "此卡状态为“" + s + "”，不能用于支付。请联系服务网点。",
    code_used: "此激活码已被使用。如需查询，请到服务网点补发信函。", code_expired: "此激活码已过期。请到服务网点补发信函。",
    code_revoked: "此激活码已被新的信函取代。", unknown_code: "激活码不正确，请核对信函。",
    confirm_lost: "确定挂失此卡？各终端在下次更新时将拒绝此卡；余额可转入新卡。",
    lost_since: (c, s, t) => "卡 " + c + " 状态：" + s + (t ? "（自 " + t + "）" : "") + "。",
    found_before: (t) => "如在 " + t + " 前找到，可继续使用。", replaced_by: (c) => "已由新卡 " + c + " 替换。",
    pending_transfer: (a) => "待转入新卡：" + a + "。", carried_to: (a) => "已转入新卡：" + a + "。",
    carried_pending: (c, a, t) => "原挂失卡 " + c + " 的余额 " + a + " 待转入，" + t + " 起可用。",
    carried_collect: (a) => "原挂失卡转入余额 " + a + "，可在任一充值终端领取。",
  },
  en: {
    title: "Coconut Card", other: "中文", code_label: "Activation code (from your letter)", activate: "Activate and show balance",
    card_label: "Card number (16 digits)", token_label: "Card token", lookup: "Show balance", card: "Card ",
    purse: "Purse balance", medical: "Medical account balance", history: "History",
    note: "Times are when the card was tapped (Hainan time).", more: "Show more", report_lost: "Report this card lost", sign_out: "Sign out",
    found: "I found my card", none: "No transactions yet.", nothing_pending: "Nothing pending",
    loads_pending: "credits pending (top-ups, refunds) ", payments_pending: "payments pending ", holds: "clinic holds ",
    kinds: { bus_journey: "Bus journey", bus: "Bus ride", bus_entry: "Bus boarding (fare charged at exit)", clinic_visit: "Clinic visit",
             clinic: "Clinic", shop: "Shop", load: "Top-up", counter: "Service desk", adjustment: "Adjustment", refund: "Refund", other: "Other" },
    states: { pending: "pending", completed: "", posted: "", reversed: "reversed", expired: "expired", under_review: "under review",
              refunded: "refunded", partly_refunded: "partly refunded", refund_pending: "refund pending" },
    accounts: { medical: "Medical account", purse: "Purse" },
    refund_to: (a) => "Refund to " + a.toLowerCase(), refund_cash: (m) => "Purse part refunded in cash: " + m,
    line: (n) => "line " + n, stop: (n) => "stop " + n, journey: (a, b) => "stop " + a + " → stop " + b,
    when: (y, mo, d, h, mi) => Number(d) + " " + ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"][Number(mo) - 1] + " " + y + ", " + h + ":" + mi,
    minus: "paid", plus: "received",
    wrong: "Card number or token is wrong. Check both and try again.", too_many: "Too many attempts. Please wait a minute and try again.",
    unavailable: (s) => "The service is not available right now (error " + s + "). Please try later.",
    offline: "Cannot reach the service. Check your connection and try again.",
    digits: "The card number has 16 digits.", blocked: (s) => "This card is " + s + ": it cannot be used for payments. Contact the card service desk.",
    code_used: "This activation code was used already. Ask the card service desk for a new letter.",
    code_expired: "This activation code has expired. Ask the card service desk for a new letter.",
    code_revoked: "This activation code was replaced by a newer letter.", unknown_code: "This activation code is not right. Check the letter.",
    confirm_lost: "Report this card lost? It is blocked at every terminal at their next update; its balance can move to a new card.",
    lost_since: (c, s, t) => "Card " + c + " is " + s + (t ? " since " + t : "") + ".",
    found_before: (t) => "If you find it before " + t + ", you can use it again.", replaced_by: (c) => "Replaced by card " + c + ".",
    pending_transfer: (a) => "Pending transfer to the new card: " + a + ".", carried_to: (a) => "Balance carried to the new card: " + a + ".",
    carried_pending: (c, a, t) => "Pending transfer from your lost card " + c + ": " + a + ", available from " + t,
    carried_collect: (a) => "Carried from your lost card: " + a + " to collect with a load at any load terminal",
  },
};
const byId = (id) => document.getElementById(id);
const fragment = new URLSearchParams(location.hash.slice(1));
const prefersZh = (navigator.languages || [navigator.language || ""]).some((l) => /^zh\b/i.test(l));
let lang = fragment.get("lang") || sessionStorage.getItem("coconut.lang") || (prefersZh ? "zh" : "en");
if (!texts[lang]) lang = "en";
let T = texts[lang];
let session = null;      // {card, token}: this tab only (sessionStorage)
let lastView = null;     // what is shown, re-rendered on a language switch
const yuan = (fen) => (fen < 0 ? "-" : "") + "¥" + (Math.abs(fen) / 100).toFixed(2);
function spokenYuan(fen) { return (fen < 0 ? T.minus : T.plus) + " " + (Math.abs(fen) / 100).toFixed(2) + (lang === "zh" ? " 元" : " yuan"); }
function when(text) {
  const m = /^(\d{4})-(\d{2})-(\d{2})T(\d{2}):(\d{2})/.exec(text || "");
  return m ? T.when(m[1], m[2], m[3], m[4], m[5]) : "";
}
function instant(iso) { return iso ? when(new Date(new Date(iso).getTime() + 8 * 3600 * 1000).toISOString()) : ""; }

function applyLanguage() {
  document.documentElement.lang = lang === "zh" ? "zh-CN" : "en";
  document.title = T.title;
  const set = { "title": T.title, "code-label": T.code_label, "activate-button": T.activate, "card-label": T.card_label,
                "token-label": T.token_label, "lookup-button": T.lookup, "purse-label": T.purse, "medical-label": T.medical,
                "history-heading": T.history, "history-note": T.note, "more": T.more, "report-lost": T.report_lost,
                "sign-out": T.sign_out, "found": T.found };
  for (const id in set) byId(id).textContent = set[id];
  const sw = byId("switch-lang");
  sw.textContent = T.other;
  sw.lang = lang === "zh" ? "en" : "zh-CN";
  if (lastView) lastView();
}

function show(text, kind) {
  const box = byId("message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = false;
}

async function call(path, method, body) {
  const headers = {};
  if (session) headers["Authorization"] = "Bearer " + session.token;
  if (body) headers["Content-Type"] = "application/json";
  const response = await fetch(path, { method: method || "GET", headers: headers, body: body ? JSON.stringify(body) : undefined });
  let json = null;
  try { json = await response.json(); } catch (e) { json = null; }
  return { status: response.status, body: json };
}

function explain(answer) {
  const code = answer.body && answer.body.error ? answer.body.error.code : "";
  if (T[code]) return T[code];
  if (answer.status === 401 || answer.status === 404) return T.wrong;
  if (answer.status === 429) return T.too_many;
  return T.unavailable(answer.status);
}

function placeText(row) {
  const p = row.place || {};
  const bits = [];
  if (p.participant) bits.push(p.participant);
  if (p.line) bits.push(T.line(p.line));
  if (p.entry_station && p.exit_station) bits.push(T.journey(p.entry_station, p.exit_station));
  else if (p.station) bits.push(T.stop(p.station));
  return bits.join(" · ");
}

function rowItem(row) {
  const li = document.createElement("li");
  li.className = "state-" + row.state;
  li.dataset.kind = row.kind;
  li.dataset.state = row.state;
  const head = li.appendChild(document.createElement("div"));
  head.className = "row-head";
  const title = head.appendChild(document.createElement("span"));
  title.className = "row-title";
  const state = T.states[row.state];
  title.textContent = (T.kinds[row.kind] || row.kind) + (state ? " (" + state + ")" : "");
  const amount = head.appendChild(document.createElement("span"));
  amount.className = "amount" + (row.amount_fen > 0 ? " credit" : "");
  amount.textContent = yuan(row.amount_fen);
  amount.setAttribute("aria-label", spokenYuan(row.amount_fen));
  const meta = li.appendChild(document.createElement("div"));
  meta.className = "muted";
  const time = meta.appendChild(document.createElement("time"));
  time.className = "tap-time";
  time.dateTime = row.time;
  time.textContent = when(row.time);
  const place = placeText(row);
  if (place) meta.appendChild(document.createElement("span")).textContent = " · " + place;
  if (row.kind === "clinic_visit" || (row.parts && row.parts.length > 1) || row.refund) {
    const parts = li.appendChild(document.createElement("ul"));
    parts.className = "parts";
    for (const part of row.parts) {
      const item = parts.appendChild(document.createElement("li"));
      item.className = "part-" + part.account + (part.refund ? " refund" : "");
      const partState = T.states[part.state === "posted" ? "completed" : part.state];
      const account = part.refund ? T.refund_to(T.accounts[part.account]) : T.accounts[part.account];
      item.textContent = account + ": " + yuan(part.amount_fen) + (partState ? " (" + partState + ")" : "");
    }
    // A purse part refunded from the clinic's till: no money on the card, said in words.
    if (row.refund && row.refund.purse_to === "cash") {
      const item = parts.appendChild(document.createElement("li"));
      item.className = "part-cash refund";
      item.textContent = T.refund_cash(yuan(row.refund.purse_fen));
    }
  }
  return li;
}

let shownRows = [];
let nextCursor = null;

function renderRows() {
  const list = byId("rows");
  list.replaceChildren();
  for (const row of shownRows) list.appendChild(rowItem(row));
  if (!shownRows.length) list.appendChild(document.createElement("li")).textContent = T.none;
  byId("more").hidden = !nextCursor;
}

function render(card) {
  byId("card-heading").textContent = T.card + card.card_number;
  byId("purse-balance").textContent = card.purse ? yuan(card.purse.balance_fen) : "—";
  const pending = [];
  if (card.purse && card.purse.pending_credit_fen) pending.push(T.loads_pending + yuan(card.purse.pending_credit_fen));
  if (card.purse && card.purse.pending_debit_fen) pending.push(T.payments_pending + yuan(card.purse.pending_debit_fen));
  byId("pending").textContent = pending.length ? pending.join(", ") : T.nothing_pending;
  byId("medical-balance").textContent = card.medical ? yuan(card.medical.balance_fen) : "—";
  byId("medical-pending").textContent = card.medical && card.medical.pending_debit_fen ? T.holds + yuan(card.medical.pending_debit_fen) : "";
  const carried = byId("carried");
  carried.hidden = !card.carried;
  if (card.carried) {
    carried.textContent = card.carried.state === "pending_transfer"
      ? T.carried_pending(card.carried.from_card, yuan(card.carried.pending_transfer_fen), instant(card.carried.available_at))
      : T.carried_collect(yuan(card.carried.collectable_fen));
  }
  renderRows();
  byId("signin").hidden = true;
  byId("result").hidden = false;
}

// A card reported lost: its token shows only its status (and "found" while that is still possible).
function renderLost(card) {
  const lost = card.lost || {};
  const lines = [T.lost_since(card.card_number, card.status, instant(lost.reported_at))];
  if (lost.state === "waiting") lines.push(T.found_before(instant(lost.waiting_period_ends_at)));
  if (lost.replaced_by) lines.push(T.replaced_by(lost.replaced_by));
  if (lost.state === "pending_transfer") lines.push(T.pending_transfer(yuan(lost.pending_transfer_fen)));
  if (lost.state === "carried") lines.push(T.carried_to(yuan(lost.carried_fen)));
  byId("lost-status").textContent = lines.join(" ");
  byId("found").hidden = lost.state !== "waiting";
  byId("signin").hidden = true;
  byId("lost").hidden = false;
}

async function more() {
  const answer = await call("/v1/cards/" + session.card + "/history?limit=10&cursor=" + nextCursor);
  if (answer.status !== 200) return show(explain(answer), "error");
  shownRows = shownRows.concat(answer.body.rows);
  nextCursor = answer.body.next_cursor;
  renderRows();
}

async function lookup() {
  byId("message").hidden = true;
  byId("result").hidden = true;
  byId("lost").hidden = true;
  lastView = null;
  if (!/^[0-9]{16}$/.test(session.card)) return show(T.digits, "error");
  try {
    const summary = await call("/v1/cards/" + session.card);
    if (summary.status !== 200) return show(explain(summary), "error");
    if (summary.body.status === "lost" || summary.body.status === "replaced") {
      lastView = () => renderLost(summary.body);
      return lastView();
    }
    const history = await call("/v1/cards/" + session.card + "/history?limit=10");
    if (history.status !== 200) return show(explain(history), "error");
    shownRows = history.body.rows;
    nextCursor = history.body.next_cursor;
    lastView = () => {
      render(summary.body);
      if (summary.body.status !== "active") show(T.blocked(summary.body.status), "warning");
    };
    lastView();
  } catch (e) {
    show(T.offline, "error");
  }
}

function remember(card, token) {
  session = { card: card, token: token };
  sessionStorage.setItem("coconut.session", JSON.stringify(session));
}

async function activate(code) {
  byId("message").hidden = true;
  try {
    const answer = await call("/v1/activate", "POST", { code: code });
    if (answer.status !== 200) return show(explain(answer), "error");
    remember(answer.body.card_number, answer.body.token);
    lookup();
  } catch (e) {
    show(T.offline, "error");
  }
}

async function change(method, confirmText) {
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const answer = await call("/v1/cards/" + session.card + "/lost", method);
    if (answer.status !== 200) return show(explain(answer), "error");
    lookup();
  } catch (e) {
    show(T.offline, "error");
  }
}

byId("switch-lang").addEventListener("click", () => {
  lang = lang === "zh" ? "en" : "zh";
  T = texts[lang];
  sessionStorage.setItem("coconut.lang", lang);
  applyLanguage();
});
byId("report-lost").addEventListener("click", () => change("POST", T.confirm_lost));
byId("found").addEventListener("click", () => change("DELETE", null));
byId("more").addEventListener("click", () => more());
byId("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem("coconut.session");
  session = null;
  location.reload();
});
byId("activate").addEventListener("submit", (event) => {
  event.preventDefault();
  activate(byId("code").value.trim());
});
byId("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  remember(byId("card").value.trim(), byId("token").value.trim());
  lookup();
});

applyLanguage();
const fromLetter = fragment.get("code");
const stored = sessionStorage.getItem("coconut.session");
if (fragment.get("code") || fragment.get("token")) history.replaceState(null, "", location.pathname);  // no secret kept in the address bar
if (fromLetter) {
  activate(fromLetter);
} else if (fragment.get("card") && fragment.get("token")) {
  remember(fragment.get("card"), fragment.get("token"));
  lookup();
} else if (stored) {
  session = JSON.parse(stored);
  lookup();
}
</script>
</body>
</html>
)page";

}  // namespace

std::string_view balance_page_html() { return balance_page; }

}  // namespace coconut::clearing::http
