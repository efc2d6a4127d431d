// Drives the console in Debian's headless Chromium over the DevTools protocol (playwright-core),
// as an operator would, by keyboard where a person would use it: for spec/console_spec.lua.
//   node console_browser.js --url http://127.0.0.1:PORT --key API_KEY --room ROOM
//        --feed "COMMAND" --screenshot FILE [--chromium /usr/bin/chromium] [--timeout-ms 240000]
// Steps: the page asks for the API key (the server has keys) and gets it; a room is created
// with the form; its three tokens and links are shown and one is copied; the rooms table
// lists it; the feed command (spec/support/demo.sh --server ... --room ...) is started; the
// room's live view shows finals from both speakers and a window with its analytics; the live
// socket is dropped once mid-feed and resumes with ?since= (no line twice); the final report
// loads. Prints one JSON line of what it saw on stdout; exit 0, or 1 with the reason on stderr.
// Only 127.0.0.1 is reached: every other request the page makes is refused and counted.
"use strict";
const { chromium } = require("playwright-core");
const { spawn } = require("child_process");
const crypto = require("crypto");
const { AccessToken } = require("livekit-server-sdk");

// A participant webhook, signed as LiveKit signs them (devkey/secret: the fake's and the
// server's key pair), so the console sees people join and leave.
let webhookId = 0;
async function participantEvent(url, event, room, identity) {
  const body = JSON.stringify({
    id: "EV_console_" + Date.now() + "_" + ++webhookId, createdAt: String(Math.floor(Date.now() / 1000)),
    event: "participant_" + event, room: { sid: "RM_" + room, name: room },
    participant: { sid: "PA_" + identity, identity, state: "ACTIVE" },
  });
  const at = new AccessToken("devkey", "secret", { ttl: "5m" });
  at.sha256 = crypto.createHash("sha256").update(body).digest("base64");
  const res = await fetch(url + "/webhooks/livekit", {
    method: "POST", body, headers: { "Content-Type": "application/webhook+json", Authorization: await at.toJwt() },
  });
  if (res.status !== 200) throw new Error("webhook " + event + " " + identity + ": " + res.status + " " + await res.text());
}

function args() {
  const out = { chromium: "/usr/bin/chromium", "timeout-ms": "240000" };
  const a = process.argv.slice(2);
  for (let i = 0; i < a.length; i += 2) out[a[i].replace(/^--/, "")] = a[i + 1];
  for (const k of ["url", "key", "room", "feed", "screenshot"]) {
    if (!out[k]) { console.error("console_browser: --" + k + " is required"); process.exit(2); }
  }
  return out;
}

async function main(o) {
  const timeout = parseInt(o["timeout-ms"], 10);
  const seen = { page_errors: [], offsite: [], console_errors: [] };
  const browser = await chromium.launch({
    executablePath: o.chromium, headless: true,
    // Root in a container has no user namespaces for Chromium's sandbox.
    args: ["--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
      "--disable-component-update", "--disable-sync"],
  });
  let feed = null;
  const kill = () => { if (feed && feed.exitCode === null) { try { process.kill(-feed.pid, "SIGTERM"); } catch (_) { /* gone */ } } };
  process.on("exit", kill);
  try {
    const context = await browser.newContext({ viewport: { width: 1440, height: 900 } });
    await context.grantPermissions(["clipboard-read", "clipboard-write"], { origin: o.url });
    // Nothing the console loads may come from anywhere but this server.
    await context.route("**/*", (route) => {
      const u = new URL(route.request().url());
      if (u.hostname === "127.0.0.1") return route.continue();
      seen.offsite.push(u.href);
      return route.abort();
    });
    const page = await context.newPage();
    page.setDefaultTimeout(timeout);
    page.on("pageerror", (e) => seen.page_errors.push(String(e)));
    page.on("console", (m) => { if (m.type() === "error") seen.console_errors.push(m.text()); });

    await page.goto(o.url + "/console");
    // The server has API keys: GET /rooms answers 401 and the page asks for one.
    await page.waitForSelector("#key-dialog[open]");
    await page.keyboard.type(o.key);
    await page.keyboard.press("Enter");
    await page.waitForFunction(() => !document.getElementById("key-dialog").open);
    await page.waitForFunction(() => document.querySelector("#health .ok, #health .degraded") !== null);
    seen.health = await page.textContent("#health");

    // Create a room, by keyboard: type its name, Enter submits the form.
    await page.focus("#create-name");
    await page.keyboard.type(o.room);
    await page.keyboard.press("Enter");
    await page.waitForSelector("#create-result dl");
    seen.created = await page.$$eval("#create-result dt", (dts) => dts.map((d) => [d.textContent, d.nextElementSibling.querySelector("code").textContent]));
    const interviewerToken = seen.created.find(([k]) => k === "Interviewer token")[1];
    await page.click("#create-result dd:has(code[title='" + interviewerToken + "']) button");
    seen.clipboard_matches = (await page.evaluate(() => navigator.clipboard.readText())) === interviewerToken;
    await page.waitForSelector("#rooms-table tbody tr a[href='#room=" + encodeURIComponent(o.room) + "']");
    seen.rooms_row = await page.$eval("#rooms-table tbody tr:has(a[href='#room=" + encodeURIComponent(o.room) + "'])",
      (tr) => [...tr.cells].map((c) => c.textContent));

    // Start the demo feed, then watch the room: follow the "Watch it live" link by keyboard.
    feed = spawn("sh", ["-c", o.feed], { stdio: ["ignore", "inherit", "inherit"], detached: true });
    const feedDone = new Promise((resolve) => feed.on("exit", (code) => resolve(code)));
    await page.focus("#create-result a[href^='#room=']");
    await page.keyboard.press("Enter");
    await page.waitForSelector("#room-view:not([hidden])");
    await page.waitForFunction(() => document.getElementById("live-state").textContent === "live");
    for (const who of ["interviewer-demo", "candidate-demo"]) await participantEvent(o.url, "joined", o.room, who);
    await page.waitForFunction(() => document.querySelectorAll("#people li.role-interviewer, #people li.role-candidate").length === 2);
    seen.people_joined = await page.$$eval("#people li", (lis) => lis.map((li) => li.textContent));

    // Once the first final is shown, drop the live socket: the page must resume with ?since=.
    await page.waitForSelector("#transcript li");
    seen.dropped_at_seq = await page.evaluate(() => {
      window.specDropped = room.ws;
      room.ws.close(4000, "spec drops the socket");
      return room.lastSeq;
    });
    seen.resumed_url = await page.waitForFunction(() => room.ws && room.ws !== window.specDropped
      && room.ws.readyState === WebSocket.OPEN && room.ws.url).then((h) => h.jsonValue());

    await page.waitForSelector("#transcript li[data-role=interviewer]");
    await page.waitForSelector("#transcript li[data-role=candidate]");
    await page.waitForSelector("#windows li.window .text");
    await page.waitForSelector("#windows li.window .eval .status-ok");
    seen.feed_exit = await feedDone;
    // The feed is over: every final has been stored and announced; give the page a moment
    // to receive the last ones, then count what it shows.
    await page.waitForFunction(async ([url, room, key]) => {
      const res = await fetch(url + "/rooms/" + encodeURIComponent(room) + "/transcript",
        { headers: { Authorization: "Bearer " + key } });
      const doc = await res.json();
      return doc.transcript.length === document.querySelectorAll("#transcript li").length;
    }, [o.url, o.room, o.key], { polling: 250 });
    seen.lines = await page.$$eval("#transcript li", (lis) => lis.map((li) => ({ role: li.dataset.role, text: li.textContent })));
    seen.windows = await page.$$eval("#windows li.window", (lis) => lis.map((li) => li.querySelector("h4").textContent));
    seen.heard = await page.$$eval("#heard li", (lis) => lis.map((li) => li.textContent));
    await participantEvent(o.url, "left", o.room, "candidate-demo");
    await page.waitForFunction(() => [...document.querySelectorAll("#events li")].some((li) => /candidate-demo .* left/.test(li.textContent)));
    seen.people_after_leave = await page.$$eval("#people li", (lis) => lis.map((li) => li.textContent));

    await page.click("#report-button");
    await page.waitForFunction(() => !/^loading/.test(document.getElementById("report").textContent));
    seen.report = (await page.textContent("#report")).slice(0, 400);

    await page.screenshot({ path: o.screenshot, fullPage: true });
    seen.screenshot = o.screenshot;
  } finally {
    kill();
    await browser.close();
  }
  process.stdout.write(JSON.stringify(seen) + "\n");
}

const o = args();
// The whole run has one deadline, so a hang never outlives the spec.
setTimeout(() => { console.error("console_browser: timed out"); process.exit(1); }, parseInt(o["timeout-ms"], 10) + 30000).unref();
main(o).then(() => process.exit(0), (e) => { console.error("console_browser: " + (e && e.stack || e)); process.exit(1); });
