"""The cardholder's balance page and activation letters, end to end, in headless Chromium.

A small simulated island day (`coconut simulate`: buses with entry/exit fares, shops, a clinic, uploads
through the terminal SDK) gives the cards a real history. Then coconut-hsmd and coconut-clearingd serve
that island's data on loopback, and:

history  GET /v1/cards/{n}/history walked page by page (next_cursor): every row once, the rows' purse and
         medical parts add up to the card's balances; a clinic visit is one row with its medical and purse
         parts (DF11 linked the purchase to the hold), a bus journey one row with entry and exit stations,
         no 0-fen "bus ride" row; a visit refunded the same day (simulate --clinic-refunds) is one row in
         state `refunded` (to the card: it comes to 0; in cash: it keeps its purse part); bad cursor and
         limit 400, another card's token 404.
page     the page in Chinese (a zh-CN browser) and in English (an en-US browser, and the switch): the rows
         the API gave, the tap times, the grouped visit and journey, the labelled balances, "show more";
         screenshots at 360 px kept in ARTIFACTS.
letters  `coconut card letters` (role registry or counter; a read-only clerk gets exit 21 / 403): the letter's
         QR code read back from a screenshot of the letter (zbarimg) is the link with #code=…; the page
         opened from it shows the balance (code exchanged, token in the tab only); the same code again is
         refused (410 code_used, the page says so in both languages); an expired code 410 code_expired; a
         re-issue revokes the earlier token (404 for it) and the earlier code (410 code_revoked); all of it
         journaled with the clerk's name.

Usage: test_balance_page.py COCONUT HSMD CLEARINGD ARTIFACTS
"""

import http.client
import json
import os
import base64
import re
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "clearing"))
from test_clearingd_it import wait_ready_file  # noqa: E402  (the daemons' ready files, bounded)

WAIT_S = 20


def log(text):
    print(text, flush=True)


def run(argv, expect=0, timeout=300):
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout)
    assert result.returncode == expect, (argv, result.returncode, result.stdout[-2000:], result.stderr[-2000:])
    return result.stdout


class Http:
    def __init__(self, port):
        self.port = port

    def call(self, method, path, token=None, body=None):
        connection = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        headers = {}
        if token:
            headers["Authorization"] = "Bearer " + token
        data = None
        if body is not None:
            data = json.dumps(body)
            headers["Content-Type"] = "application/json"
        connection.request(method, path, body=data, headers=headers)
        answer = connection.getresponse()
        raw = answer.read()
        connection.close()
        return answer.status, (json.loads(raw) if raw else None)


class Island:
    def __init__(self, tools, work):
        self.coconut, self.hsmd, self.clearingd = tools
        self.work = work
        self.dir = os.path.join(work, "island")
        self.data = os.path.join(self.dir, "clearing")
        self.processes = []

    def simulate(self):
        run([self.coconut, "simulate", "--dir", self.dir, "--images", os.path.join(self.work, "media"), "--cards", "10",
             "--buses", "3", "--clinics", "1", "--shops", "2", "--transactions", "1200", "--seed", "22", "--clinic-refunds", "5"])
        self.tokens = os.path.join(self.dir, "tokens")  # every card's token, written by simulate (0600 files)
        assert len(self.cards()) >= 10, self.cards()
        self.clerk = {}
        for name, roles in (("lin", "registry"), ("wang", "counter"), ("reader", "read")):
            token = run([self.clearingd, "admin", "--data", self.data, "clerk-add", "--name", name, "--roles", roles]).strip()
            path = os.path.join(self.work, name + ".token")
            with open(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600), "w") as f:
                f.write(token + "\n")
            self.clerk[name] = (token, path)

    def serve(self):
        ready = os.path.join(self.work, "hsm.port")
        hsm = subprocess.Popen([self.hsmd, "serve", "--store", os.path.join(self.dir, "hsm"), "--listen", "127.0.0.1:0",
                                "--ready-file", ready], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        self.processes.append(hsm)
        hsm_port = wait_ready_file(ready, hsm, "coconut-hsmd")
        iso_ready, http_ready = os.path.join(self.work, "iso.port"), os.path.join(self.work, "http.port")
        self.daemon_log = os.path.join(self.work, "clearingd.log")
        daemon = subprocess.Popen([self.clearingd, "serve", "--data", self.data, "--hsm", f"127.0.0.1:{hsm_port}", "--hsm-key",
                                   os.path.join(self.dir, "keys", "clearing.key"), "--insecure-terminals", "--iso-listen",
                                   "127.0.0.1:0", "--ready-file", iso_ready, "--http-listen", "127.0.0.1:0", "--http-ready-file",
                                   http_ready, "--http-token-rate", "1000"], stdout=subprocess.DEVNULL, stderr=open(self.daemon_log, "a"))
        self.processes.append(daemon)
        wait_ready_file(iso_ready, daemon, "coconut-clearingd")
        self.http_port = wait_ready_file(http_ready, daemon, "coconut-clearingd (HTTP)")
        self.api = Http(self.http_port)

    def token(self, card):
        return open(os.path.join(self.tokens, card + ".token")).read().strip()

    def cards(self):
        return sorted(name[:-len(".token")] for name in os.listdir(self.tokens) if name.endswith(".token"))

    def stop(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=WAIT_S)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()


# ---- history ------------------------------------------------------------------------------------------------------------

def all_rows(api, card, token, limit):
    rows, cursor, pages = [], None, 0
    while True:
        status, page = api.call("GET", f"/v1/cards/{card}/history?limit={limit}" + (f"&cursor={cursor}" if cursor else ""), token)
        assert status == 200, page
        assert len(page["rows"]) <= limit, page
        rows += page["rows"]
        pages += 1
        cursor = page["next_cursor"]
        if cursor is None:
            return rows, pages
        assert pages < 500


def check_refunded_visits(refunded):
    """A visit refunded the same day is its own row, state `refunded`: the medical part back (a posted refund
    part), the purse part credited to the card (the row comes to 0) or handed back in cash (no part: the row
    keeps its purse part)."""
    assert refunded, "no refunded clinic visit in any card's history"
    for row in refunded:
        assert row["state"] == "refunded", row
        refund = row["refund"]
        for p in row["parts"]:
            if p.get("refund"):
                assert p["amount_fen"] > 0 and p["state"] == "posted", row
        if refund.get("medical_fen"):
            assert any(p.get("refund") and p["account"] == "medical" for p in row["parts"]), row
        if refund.get("purse_to") == "card" or "purse_to" not in refund:
            assert row["amount_fen"] == 0, row
    to_card = [r for r in refunded if r["refund"].get("purse_to") == "card"]
    in_cash = [r for r in refunded if r["refund"].get("purse_to") == "cash"]
    assert to_card and in_cash, [r["refund"] for r in refunded]
    for row in in_cash:
        purse = [p for p in row["parts"] if p["account"] == "purse"]
        assert len(purse) == 1 and row["amount_fen"] == purse[0]["amount_fen"] == -row["refund"]["purse_fen"], row
    log(f"  ok  {len(refunded)} visits refunded the same day: state refunded, {len(to_card)} purse parts back on the card"
        f" (the row comes to 0), {len(in_cash)} in cash")


def check_history(island):
    log("history")
    api = island.api
    chosen = None
    refunded = []  # visits refunded later the same day (simulate --clinic-refunds 5)
    for card in island.cards():
        token = island.token(card)
        rows, pages = all_rows(api, card, token, 3)
        whole, _ = all_rows(api, card, token, 100)
        assert [r["id"] for r in rows] == [r["id"] for r in whole], "paging changes nothing but the page size"
        assert len({r["id"] for r in rows}) == len(rows), "every row once"
        status, balance = api.call("GET", f"/v1/cards/{card}", token)
        assert status == 200, balance
        sums = {"purse": 0, "medical": 0}
        for row in rows:
            assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d\+08:00", row["time"]), row
            assert not (row["kind"] == "bus" and row["amount_fen"] == 0), ("a 0-fen tap is no bus ride", row)
            for part in row["parts"]:
                if part["state"] == "posted":
                    sums[part["account"]] += part["amount_fen"]
        assert sums["purse"] == balance["purse"]["balance_fen"], (card, sums, balance)
        if balance["medical"] is not None:
            assert sums["medical"] == balance["medical"]["balance_fen"], (card, sums, balance)
        refunded += [r for r in rows if r["kind"] == "clinic_visit" and "refund" in r]
        visits = [r for r in rows if r["kind"] == "clinic_visit" and len(r["parts"]) == 2 and "refund" not in r]
        journeys = [r for r in rows if r["kind"] == "bus_journey"]
        if visits and journeys and (chosen is None or pages > chosen[3]):
            chosen = (card, visits[0], journeys[0], pages)
    assert chosen, "a card with a clinic visit paid by both accounts and a bus journey"
    check_refunded_visits(refunded)
    card, visit, journey, pages = chosen
    assert [p["account"] for p in visit["parts"]] == ["medical", "purse"], visit
    assert visit["amount_fen"] == sum(p["amount_fen"] for p in visit["parts"]) < 0, visit
    assert visit["place"]["participant"] and visit["time_source"] == "terminal", visit
    assert journey["place"]["entry_station"] and journey["place"]["exit_station"] and journey["amount_fen"] < 0, journey
    assert journey["time_source"] == "card" and journey["entry_time"] <= journey["time"], journey
    log(f"  ok  {len(island.cards())} cards walked in pages of 3 and of 100: same rows, each once, parts add up to the balances;"
        f" card {card}: visit {visit['amount_fen']} fen (medical + purse), journey stop {journey['place']['entry_station']}"
        f" → {journey['place']['exit_station']}")
    token = island.token(card)
    for bad in ("?cursor=x", "?limit=0", "?limit=101"):
        status, body = api.call("GET", f"/v1/cards/{card}/history{bad}", token)
        assert status == 400 and body["error"]["code"], (bad, status, body)
    other = next(c for c in island.cards() if c != card)
    status, body = api.call("GET", f"/v1/cards/{card}/history", island.token(other))
    assert status == 404, (status, body)
    status, body = api.call("GET", f"/v1/cards/{card}/history")
    assert status == 401, (status, body)
    log("  ok  bad cursor / limit 400, another card's token 404, no token 401")
    return card


# ---- page -----------------------------------------------------------------------------------------------------------------

def chromium(url, artifacts, language, screenshot=None, height=2400):
    profile = os.path.join(artifacts, f"chromium-profile-{language}")
    argv = ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
            "--no-first-run", "--virtual-time-budget=8000", f"--window-size=360,{height}", f"--lang={language}",
            f"--accept-lang={language}", f"--user-data-dir={profile}"]
    argv += [f"--screenshot={screenshot}"] if screenshot else ["--dump-dom"]
    result = subprocess.run(argv + [url], capture_output=True, text=True, timeout=120,
                            env=dict(os.environ, LANGUAGE=language.replace("-", "_"), LANG="C.UTF-8"))
    assert result.returncode == 0, result.stderr[-2000:]
    if screenshot:
        assert os.path.getsize(screenshot) > 5000, screenshot
    return result.stdout


def items(dom):
    """The history list's <li> rows: (attributes, inner HTML)."""
    start = dom.index('<ol id="rows"')
    body = dom[start:dom.index("</ol>", start)]
    return re.findall(r'<li class="state-[^"]*" data-kind="([^"]*)" data-state="([^"]*)">(.*?)</li>(?=<li class="state-|$)', body + "",
                      re.S)


def text_of(dom, element_id):
    start = dom.index(f'id="{element_id}"')
    start = dom.index(">", start) + 1
    return dom[start:dom.index("<", start)]


def expected_when(time_text, language):
    y, mo, d, h, mi = re.match(r"(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d)", time_text).groups()
    if language == "zh":
        return f"{y}年{int(mo)}月{int(d)}日 {h}:{mi}"
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    return f"{int(d)} {months[int(mo) - 1]} {y}, {h}:{mi}"


LABELS = {
    "zh": {"purse": "电子钱包余额", "medical": "医保个人账户余额", "visit": "门诊就医", "journey": "公交行程",
           "medical_part": "医保个人账户", "purse_part": "电子钱包", "more": "显示更多", "lang": "zh-CN"},
    "en": {"purse": "Purse balance", "medical": "Medical account balance", "visit": "Clinic visit", "journey": "Bus journey",
           "medical_part": "Medical account", "purse_part": "Purse", "more": "Show more", "lang": "en"},
}


def check_page_dom(dom, language, first_page, balance):
    labels = LABELS[language]
    assert f'<html lang="{labels["lang"]}"' in dom, dom[:300]
    assert text_of(dom, "purse-label") == labels["purse"] and text_of(dom, "medical-label") == labels["medical"], language
    assert text_of(dom, "purse-balance") == f"¥{balance['purse']['balance_fen'] / 100:.2f}", text_of(dom, "purse-balance")
    assert text_of(dom, "medical-balance") == f"¥{balance['medical']['balance_fen'] / 100:.2f}"
    shown = items(dom)
    assert len(shown) == len(first_page["rows"]), (len(shown), len(first_page["rows"]))
    for (kind, state, inner), row in zip(shown, first_page["rows"]):
        assert kind == row["kind"] and state == row["state"], (kind, state, row)
        assert expected_when(row["time"], language) in inner, (expected_when(row["time"], language), inner)
        assert f"¥{abs(row['amount_fen']) / 100:.2f}" in inner, (row, inner)
        if row["kind"] == "clinic_visit" and len(row["parts"]) == 2:
            assert labels["visit"] in inner and 'class="part-medical"' in inner and 'class="part-purse"' in inner, inner
            assert labels["medical_part"] in inner and labels["purse_part"] in inner, inner
        if row["kind"] == "bus_journey":
            assert labels["journey"] in inner and "→" in inner, inner
        if kind == "bus":
            assert row["amount_fen"] != 0, ("a 0-fen tap is never shown as a bus ride", row)
    if first_page["next_cursor"] is None:  # the whole history: the grouped rows are among those checked
        assert any(r["kind"] == "clinic_visit" and len(r["parts"]) == 2 for r in first_page["rows"])
        assert any(r["kind"] == "bus_journey" for r in first_page["rows"])
    if first_page["next_cursor"]:
        assert '<button type="button" id="more">' in dom and text_of(dom, "more") == labels["more"], "show more offered"


class Browser:
    """Headless Chromium driven over the DevTools protocol on a pipe (--remote-debugging-pipe: commands on
    fd 3, answers on fd 4, each a JSON text ended by NUL), so a test can click and wait like a person."""

    def __init__(self, artifacts, language):
        to_chromium, self.commands = os.pipe()
        self.answers, from_chromium = os.pipe()

        def child():
            os.dup2(to_chromium, 3)
            os.dup2(from_chromium, 4)

        self.process = subprocess.Popen(
            ["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--hide-scrollbars",
             "--no-first-run", "--remote-debugging-pipe", f"--lang={language}", f"--accept-lang={language}",
             f"--user-data-dir={os.path.join(artifacts, 'chromium-profile-cdp-' + language)}", "about:blank"],
            preexec_fn=child, pass_fds=(3, 4), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            env=dict(os.environ, LANGUAGE=language.replace("-", "_")))
        os.close(to_chromium)
        os.close(from_chromium)
        self.buffer = b""
        self.next_id = 0
        self.session = None

    def send(self, method, params=None, timeout_s=30):
        self.next_id += 1
        message = {"id": self.next_id, "method": method, "params": params or {}}
        if self.session and not method.startswith("Target."):
            message["sessionId"] = self.session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + timeout_s
        while True:
            while b"\0" in self.buffer:
                text, self.buffer = self.buffer.split(b"\0", 1)
                answer = json.loads(text)
                if answer.get("id") == self.next_id:
                    assert "error" not in answer, (method, answer)
                    return answer["result"]
            left = deadline - time.monotonic()
            assert left > 0, f"no answer to {method} within {timeout_s} s"
            ready, _, _ = select.select([self.answers], [], [], left)
            if ready:
                chunk = os.read(self.answers, 1 << 20)
                assert chunk, "chromium closed the pipe"
                self.buffer += chunk

    def open(self, url):
        target = self.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        self.session = self.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        self.send("Emulation.setDeviceMetricsOverride", {"width": 360, "height": 800, "deviceScaleFactor": 1, "mobile": True})
        self.send("Page.navigate", {"url": url})

    def evaluate(self, expression, timeout_s=30):
        result = self.send("Runtime.evaluate", {"expression": expression, "awaitPromise": True, "returnByValue": True},
                           timeout_s)
        assert "exceptionDetails" not in result, result
        return result["result"].get("value")

    def wait_for(self, expression, what, timeout_s=20):
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.evaluate(expression):
                return
            time.sleep(0.1)
        raise AssertionError(f"page: {what} not within {timeout_s} s")

    def screenshot(self, path, whole=True):
        height = self.evaluate("document.documentElement.scrollHeight") if whole else 800
        self.send("Emulation.setDeviceMetricsOverride", {"width": 360, "height": min(height, 8000), "deviceScaleFactor": 1,
                                                          "mobile": True})
        with open(path, "wb") as f:
            f.write(base64.b64decode(self.send("Page.captureScreenshot", {"format": "png"})["data"]))
        assert os.path.getsize(path) > 5000, path

    def close(self):
        os.close(self.commands)
        try:
            self.process.wait(timeout=WAIT_S)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        os.close(self.answers)


# Clicks "Show more" until the whole history is shown (each click waits for its rows); the page's HTML.
SHOW_ALL = """(async () => {
  const more = document.getElementById("more");
  const count = () => document.querySelectorAll("#rows > li").length;
  for (let clicks = 0; clicks < 300 && !more.hidden; clicks++) {
    const before = count();
    more.click();
    for (let waited = 0; waited < 200 && count() === before && !more.hidden; waited++) await new Promise((r) => setTimeout(r, 25));
  }
  return document.documentElement.outerHTML;
})()"""


def check_page(island, card, artifacts):
    log("page")
    token = island.token(card)
    status, balance = island.api.call("GET", f"/v1/cards/{card}", token)
    assert status == 200
    status, first = island.api.call("GET", f"/v1/cards/{card}/history?limit=10", token)
    assert status == 200 and first["next_cursor"], first
    rows, _ = all_rows(island.api, card, token, 100)
    base = f"http://127.0.0.1:{island.http_port}/"
    for language, browser_language in (("zh", "zh-CN"), ("en", "en-US")):
        # First the page as it opens (dump-dom): ten rows and "show more".
        dom = chromium(f"{base}#card={card}&token={token}", artifacts, browser_language)
        check_page_dom(dom, language, first, balance)
        # Then the whole history through "show more", in a browser driven like a person's.
        browser = Browser(artifacts, browser_language)
        try:
            browser.open(f"{base}#card={card}&token={token}")
            browser.wait_for("(document.getElementById('result') || {hidden: true}).hidden === false", "the balance")
            assert browser.evaluate("location.hash") == "", "the token is gone from the address bar"
            assert browser.evaluate("JSON.parse(sessionStorage.getItem('coconut.session')).card") == card
            browser.screenshot(os.path.join(artifacts, f"balance_page_{language}_360px_first_screen.png"), whole=False)
            check_page_dom(browser.evaluate(SHOW_ALL, 120), language, {"rows": rows, "next_cursor": None}, balance)
            browser.screenshot(os.path.join(artifacts, f"balance_page_{language}_360px.png"))
            # The switch: the other language, the same rows.
            other = "en" if language == "zh" else "zh"
            browser.evaluate("document.getElementById('switch-lang').click()")
            check_page_dom(browser.evaluate("document.documentElement.outerHTML"), other, {"rows": rows, "next_cursor": None},
                           balance)
        finally:
            browser.close()
    log(f"  ok  zh-CN and en-US browsers: the first 10 rows, then all {len(rows)} through 'show more' with tap times,"
        f" grouped visits and journeys, labelled balances; the switch; screenshots {artifacts}/balance_page_*_360px.png")
    dom = chromium(f"{base}#card={card}&token=card_wrong", artifacts, "zh-CN")
    assert text_of(dom, "message") == "卡号或令牌不正确，请检查后重试。", text_of(dom, "message")
    dom = chromium(f"{base}#card={card}&token=card_wrong", artifacts, "en-US")
    assert text_of(dom, "message").startswith("Card number or token is wrong"), text_of(dom, "message")
    log("  ok  a wrong token explained in both languages")


# ---- letters ---------------------------------------------------------------------------------------------------------------

def letters(island, card, token_path, out, extra=(), expect=0):
    return run([island.coconut, "card", "letters", "--clearing-http", f"127.0.0.1:{island.http_port}", "--token-file", token_path,
                "--card", card, "--out", out, *extra], expect=expect)


def code_of(letter):
    return re.search(r'<p class="code" id="code">([^<]+)</p>', open(letter, encoding="utf-8").read()).group(1)


def qr_link(letter, artifacts):
    """The letter rendered by Chromium, its QR code read back by zbarimg (or, without zbarimg, the SVG's presence)."""
    shot = os.path.join(artifacts, "activation_letter.png")
    subprocess.run(["chromium", "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars", "--window-size=800,1200",
                    f"--user-data-dir={os.path.join(artifacts, 'chromium-profile-letter')}", f"--screenshot={shot}",
                    "file://" + letter], capture_output=True, timeout=120, check=True)
    if shutil.which("zbarimg") is None:
        assert '<svg class="qr"' in open(letter, encoding="utf-8").read()
        return None
    result = subprocess.run(["zbarimg", "--quiet", "--raw", shot], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


def journal(island, action):
    entries, after = [], 0
    for _ in range(100):
        status, body = island.api.call("GET", f"/v1/clerk/journal?after={after}&limit=1000", island.clerk["reader"][0])
        assert status == 200, body
        entries += body["entries"]
        if len(body["entries"]) < 1000:
            return [e for e in entries if e["action"] == action]
        after = body["entries"][-1]["sequence"]
    raise AssertionError("journal longer than 100 pages")


def check_letters(island, card, artifacts):
    log("letters")
    out = os.path.join(island.work, "letters")
    letters(island, card, island.clerk["reader"][1], out, expect=21)  # 403: a read-only clerk
    letters(island, "123", island.clerk["lin"][1], out, expect=2)  # not a card number
    letters(island, card, island.clerk["lin"][1], out, ["--valid-days", "91"], expect=2)
    letters(island, "9999999999999999", island.clerk["lin"][1], out, expect=22)  # 404: no such card
    printed = letters(island, card, island.clerk["lin"][1], out)
    letter = os.path.join(out, f"letter-{card}.html")
    assert letter in printed and os.stat(letter).st_mode & 0o777 == 0o600, printed
    code = code_of(letter)
    base = f"http://127.0.0.1:{island.http_port}/"
    link = qr_link(letter, artifacts)
    if link is not None:
        assert link == f"{base}#code={code}", (link, code)
    assert [e["clerk"] for e in journal(island, "activation_code") if e["target"] == card] == ["lin"]
    log(f"  ok  letter {letter} (0600); its QR code reads {link or '(zbarimg missing: SVG present)'}; a read clerk exit 21 (403)")

    # The page from the letter's link: the code exchanged once, the balance shown.
    dom = chromium(f"{base}#code={code}", artifacts, "zh-CN")
    assert text_of(dom, "card-heading") == f"卡号 {card}", text_of(dom, "card-heading")
    assert items(dom), "the history shown after the exchange"
    status, body = island.api.call("POST", "/v1/activate", body={"code": code})
    assert status == 410 and body["error"]["code"] == "code_used", (status, body)
    dom = chromium(f"{base}#code={code}", artifacts, "zh-CN")
    assert text_of(dom, "message") == "此激活码已被使用。如需查询，请到服务网点补发信函。", text_of(dom, "message")
    dom = chromium(f"{base}#code={code}", artifacts, "en-US")
    assert text_of(dom, "message").startswith("This activation code was used already"), text_of(dom, "message")
    chromium(f"{base}#code={code}", artifacts, "en-US", os.path.join(artifacts, "activation_used_en_360px.png"), 800)
    log("  ok  the page exchanged the code and showed the card; the second use 410 code_used, said in both languages")

    for bad, status_code, error in (({"code": "2222-2222-2222-2222"}, 404, "unknown_code"), ({"code": "x"}, 404, "unknown_code"),
                                    ({}, 400, None), ({"code": code, "card": card}, 400, None)):
        status, body = island.api.call("POST", "/v1/activate", body=bad)
        assert status == status_code and (error is None or body["error"]["code"] == error), (bad, status, body)

    # Expired: a code valid for one second.
    status, issued = island.api.call("POST", f"/v1/clerk/cards/{card}/activation", island.clerk["wang"][0], {"valid_s": 1})
    assert status == 201 and issued["token_revoked"] is False, issued
    time.sleep(2.1)
    status, body = island.api.call("POST", "/v1/activate", body={"code": issued["code"]})
    assert status == 410 and body["error"]["code"] == "code_expired", (status, body)
    for bad in ({"valid_s": 0}, {"valid_s": 8000000}, {"reissue": "yes"}, {"other": 1}):
        status, body = island.api.call("POST", f"/v1/clerk/cards/{card}/activation", island.clerk["wang"][0], bad)
        assert status == 400, (bad, status, body)
    status, body = island.api.call("POST", f"/v1/clerk/cards/{card}/activation", island.clerk["reader"][0], {})
    assert status == 403, (status, body)
    log("  ok  an expired code 410 code_expired; unknown 404, bad bodies 400, a read clerk 403")

    # Re-issue: a fresh code taken to the page, then a replacement letter revokes that token and the unused code.
    status, fresh = island.api.call("POST", f"/v1/clerk/cards/{card}/activation", island.clerk["wang"][0], {})
    status, exchanged = island.api.call("POST", "/v1/activate", body={"code": fresh["code"]})
    assert status == 200 and exchanged["card_number"] == card, exchanged
    status, _ = island.api.call("GET", f"/v1/cards/{card}", exchanged["token"])
    assert status == 200
    status, unused = island.api.call("POST", f"/v1/clerk/cards/{card}/activation", island.clerk["wang"][0], {})
    letters(island, card, island.clerk["wang"][1], out, ["--reissue"])
    status, _ = island.api.call("GET", f"/v1/cards/{card}", exchanged["token"])
    assert status == 404, status
    status, _ = island.api.call("GET", f"/v1/cards/{card}", island.token(card))
    assert status == 404, status
    status, body = island.api.call("POST", "/v1/activate", body={"code": unused["code"]})
    assert status == 410 and body["error"]["code"] == "code_revoked", (status, body)
    status, body = island.api.call("POST", "/v1/activate", body={"code": code_of(letter)})
    assert status == 200 and body["card_number"] == card, body
    status, _ = island.api.call("GET", f"/v1/cards/{card}", body["token"])
    assert status == 200
    assert [e["clerk"] for e in journal(island, "activation_reissue") if e["target"] == card] == ["wang"]
    assert any(e["clerk"] == "cardholder" and e["target"] == card for e in journal(island, "activate"))
    log("  ok  re-issue (journaled for wang): the earlier token 404, the unused code 410 code_revoked, the new letter works")


def main():
    if len(sys.argv) != 5:
        sys.exit(__doc__)
    tools = [os.path.abspath(p) for p in sys.argv[1:4]]
    artifacts = os.path.abspath(sys.argv[4])
    os.makedirs(artifacts, exist_ok=True)
    work = tempfile.mkdtemp(prefix="coconut-balance-page-")
    island = Island(tools, work)
    ok = False
    try:
        island.simulate()
        island.serve()
        card = check_history(island)
        check_page(island, card, artifacts)
        check_letters(island, card, artifacts)
        ok = True
    finally:
        island.stop()
        if ok:
            shutil.rmtree(work, ignore_errors=True)
        else:
            log(f"FAILED; work directory kept: {work}")
    log("PASS")


if __name__ == "__main__":
    main()
