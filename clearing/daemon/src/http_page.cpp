// The balance page served at / : one self-contained HTML document (no external resource: the
// Content-Security-Policy forbids any), readable on a phone. It calls the cardholder API with the
// token the cardholder typed; a URL fragment #card=…&token=… fills and submits the form (the fragment
// never reaches the server or its logs).
#include <coconut/clearing/http.hpp>

namespace coconut::clearing::http {

namespace {

constexpr std::string_view balance_page = R"page(<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>Coconut Card balance</title>
<style>
  body { font-family: sans-serif; margin: 0; padding: 16px; max-width: 480px; margin-inline: auto; color: #222; background: #fafaf5; }
  h1 { font-size: 1.4em; margin: 0 0 12px; }
  label { display: block; margin-top: 10px; font-weight: bold; }
  input { width: 100%; box-sizing: border-box; font-size: 1.1em; padding: 10px; margin-top: 4px; border: 1px solid #999; border-radius: 6px; }
  button { width: 100%; font-size: 1.1em; padding: 12px; margin-top: 14px; border: 0; border-radius: 6px; background: #2d6a4f; color: #fff; }
  .message { margin-top: 14px; padding: 12px; border-radius: 6px; }
  .error { background: #fde2e1; color: #8a1c1c; }
  .warning { background: #fff3cd; color: #6b4e00; }
  .balance { font-size: 2em; font-weight: bold; margin: 6px 0; }
  table { width: 100%; border-collapse: collapse; margin-top: 10px; font-size: 0.95em; }
  td { padding: 6px 2px; border-bottom: 1px solid #ddd; vertical-align: top; }
  td.amount { text-align: right; white-space: nowrap; }
  .muted { color: #666; font-size: 0.9em; }
  button.secondary { background: #8a1c1c; }
</style>
</head>
<body>
<h1>Coconut Card</h1>
<form id="lookup">
  <label for="card">Card number (16 digits)</label>
  <input id="card" name="card" inputmode="numeric" autocomplete="off" maxlength="16" pattern="[0-9]{16}" required>
  <label for="token">Card token</label>
  <input id="token" name="token" type="password" autocomplete="off" required>
  <button type="submit">Show balance</button>
</form>
<div id="message" class="message" hidden></div>
<section id="result" hidden>
  <div class="muted">Purse balance (cleared)</div>
  <div class="balance" id="purse-balance"></div>
  <div id="pending" class="muted"></div>
  <div class="muted" style="margin-top:8px">Medical account</div>
  <div id="medical-balance"></div>
  <div id="cleared-at" class="muted"></div>
  <h2 style="font-size:1.1em;margin-top:16px">Last transactions</h2>
  <div id="carried" class="message warning" hidden></div>
  <table id="transactions"><tbody></tbody></table>
  <button type="button" id="report-lost" class="secondary">Report this card lost</button>
</section>
<section id="lost" hidden>
  <div id="lost-status" class="message warning"></div>
  <button type="button" id="found" hidden>I found my card</button>
</section>
<script>
"use strict";
const byId = (id) => document.getElementById(id);
const yuan = (fen) => (fen < 0 ? "-" : "") + "¥" + (Math.abs(fen) / 100).toFixed(2);
const kinds = { bus: "Bus ride", shop: "Shop", clinic: "Clinic", load: "Load", reversal: "Reversal", other: "Other" };

function show(text, kind) {
  const box = byId("message");
  box.textContent = text;
  box.className = "message " + kind;
  box.hidden = false;
}

async function api(path, token, method) {
  const response = await fetch(path, { method: method || "GET", headers: { "Authorization": "Bearer " + token } });
  let body = null;
  try { body = await response.json(); } catch (e) { body = null; }
  return { status: response.status, body: body };
}

function explain(status) {
  if (status === 401 || status === 404) return "Card number or token is wrong. Check both and try again.";
  if (status === 429) return "Too many attempts. Please wait a minute and try again.";
  return "The service is not available right now (error " + status + "). Please try later.";
}

function render(card, history) {
  byId("purse-balance").textContent = card.purse ? yuan(card.purse.balance_fen) : "—";
  const pending = [];
  if (card.purse && card.purse.pending_credit_fen) pending.push("loads pending " + yuan(card.purse.pending_credit_fen));
  if (card.purse && card.purse.pending_debit_fen) pending.push("payments pending " + yuan(card.purse.pending_debit_fen));
  if (card.medical && card.medical.pending_debit_fen) pending.push("clinic holds " + yuan(card.medical.pending_debit_fen));
  byId("pending").textContent = pending.length ? pending.join(", ") : "Nothing pending";
  byId("medical-balance").textContent = card.medical ? yuan(card.medical.balance_fen) : "—";
  byId("cleared-at").textContent = card.last_cleared_at ? "Last cleared " + new Date(card.last_cleared_at).toLocaleString() : "";
  const body = byId("transactions").tBodies[0];
  body.replaceChildren();
  for (const t of history.transactions) {
    const row = body.insertRow();
    const place = [t.place.participant, t.place.line ? "line " + t.place.line : "", t.place.station ? "stop " + t.place.station : ""]
      .filter(Boolean).join(", ");
    row.insertCell().textContent = new Date(t.time).toLocaleString();
    row.insertCell().textContent = (kinds[t.kind] || t.kind) + (t.state !== "posted" ? " (" + t.state.replace("_", " ") + ")" : "") +
      (place ? " — " + place : "");
    const amount = row.insertCell();
    amount.className = "amount";
    amount.textContent = yuan(t.amount_fen);
  }
  if (!history.transactions.length) body.insertRow().insertCell().textContent = "No transactions yet.";
  const carried = byId("carried");
  carried.hidden = !card.carried;
  if (card.carried) {
    carried.textContent = card.carried.state === "pending_transfer"
      ? "Pending transfer from your lost card " + card.carried.from_card + ": " + yuan(card.carried.pending_transfer_fen) +
        ", available from " + new Date(card.carried.available_at).toLocaleString()
      : "Carried from your lost card: " + yuan(card.carried.collectable_fen) + " to collect with a load at any load terminal";
  }
  byId("result").hidden = false;
}

// A card reported lost: its token shows only its status (and "found" while that is still possible).
function renderLost(card) {
  const lost = card.lost || {};
  const lines = ["Card " + card.card_number + " is " + card.status + (lost.reported_at ? " since " + new Date(lost.reported_at).toLocaleString() : "") + "."];
  if (lost.state === "waiting") lines.push("If you find it before " + new Date(lost.waiting_period_ends_at).toLocaleString() + ", you can use it again.");
  if (lost.replaced_by) lines.push("Replaced by card " + lost.replaced_by + ".");
  if (lost.state === "pending_transfer") lines.push("Pending transfer to the new card: " + yuan(lost.pending_transfer_fen) + ".");
  if (lost.state === "carried") lines.push("Balance carried to the new card: " + yuan(lost.carried_fen) + ".");
  byId("lost-status").textContent = lines.join(" ");
  byId("found").hidden = lost.state !== "waiting";
  byId("lost").hidden = false;
}

async function change(method, confirmText) {
  const card = byId("card").value.trim(), token = byId("token").value.trim();
  if (confirmText && !window.confirm(confirmText)) return;
  try {
    const answer = await api("/v1/cards/" + card + "/lost", token, method);
    if (answer.status !== 200) {
      return show(answer.body && answer.body.error ? answer.body.error.message : explain(answer.status), "error");
    }
    lookup(card, token);
  } catch (e) {
    show("Cannot reach the service. Check your connection and try again.", "error");
  }
}

async function lookup(card, token) {
  byId("message").hidden = true;
  byId("result").hidden = true;
  byId("lost").hidden = true;
  if (!/^[0-9]{16}$/.test(card)) return show("The card number has 16 digits.", "error");
  try {
    const summary = await api("/v1/cards/" + card, token);
    if (summary.status !== 200) return show(explain(summary.status), "error");
    if (summary.body.status === "lost" || summary.body.status === "replaced") return renderLost(summary.body);
    const history = await api("/v1/cards/" + card + "/transactions?limit=10", token);
    if (history.status !== 200) return show(explain(history.status), "error");
    render(summary.body, history.body);
    if (summary.body.status !== "active") {
      show("This card is " + summary.body.status + ": it cannot be used for payments. Contact the card service desk.", "warning");
    }
  } catch (e) {
    show("Cannot reach the service. Check your connection and try again.", "error");
  }
}

byId("report-lost").addEventListener("click", () =>
  change("POST", "Report this card lost? It is blocked at every terminal at their next update; its balance can move to a new card."));
byId("found").addEventListener("click", () => change("DELETE", null));

byId("lookup").addEventListener("submit", (event) => {
  event.preventDefault();
  lookup(byId("card").value.trim(), byId("token").value.trim());
});

const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.get("card") && fragment.get("token")) {
  byId("card").value = fragment.get("card");
  byId("token").value = fragment.get("token");
  history.replaceState(null, "", location.pathname);  // do not keep the token in the address bar
  lookup(fragment.get("card"), fragment.get("token"));
}
</script>
</body>
</html>
)page";

}  // namespace

std::string_view balance_page_html() { return balance_page; }

}  // namespace coconut::clearing::http
