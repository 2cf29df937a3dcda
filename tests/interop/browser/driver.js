/*
 * Drives two pages of page/index.html in headless Chromium through a file
 * transfer signaled by the server under test, and prints one JSON line.
 *
 * Usage: node driver.js '<json>' where the JSON holds
 *   pageUrl     the test page, served by the test (its origin is granted
 *               camera/microphone so Chromium offers loopback ICE candidates)
 *   server      the signaling server's base URL (http://127.0.0.1:PORT)
 *   transport   "websocket" or "polling"
 *   size, seed  the generated file's length and generator seed
 *   timeoutMs   how long the whole transfer may take
 *   executable  the browser binary (default /usr/bin/chromium)
 *   relay       true: both pages use only the TURN servers of their
 *               joinResponse (iceTransportPolicy "relay")
 *   receiverServer  the receiver's signaling URL if not `server` (a proxy)
 *   severUrl    if given: the receiver reconnects on its own; halfway through
 *               the file the sender pauses, the driver POSTs to severUrl (the
 *               test then cuts the receiver's signaling for a while), waits
 *               for the receiver's reconnection, and resumes
 *
 * Output: {"ok": true, "sender": {...}, "receiver": {...}, "disconnect": {...}}
 * or {"ok": false, "error": "...", "console": [...]}. Nothing is downloaded:
 * playwright-core only drives the browser given by `executable`.
 */
"use strict";

const fs = require("fs");
const os = require("os");
const path = require("path");
const { chromium } = require("playwright-core");

const CHROMIUM_ARGS = [
  "--headless",
  "--no-sandbox",
  "--disable-gpu",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
  "--disable-quic",
  "--allow-loopback-in-peer-connection",
  "--disable-features=WebRtcHideLocalIpsWithMdns",
  "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
];

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise(function (_, reject) {
    timer = setTimeout(function () { reject(new Error("timed out after " + ms + " ms: " + what)); }, ms);
  });
  return Promise.race([promise, timeout]).finally(function () { clearTimeout(timer); });
}

async function main(options) {
  const consoleLines = [];
  const userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "privydrop-chromium-"));
  let context = null;
  let pages = [];
  try {
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: options.executable || "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
      timeout: 30000,
    });
    const origin = new URL(options.pageUrl).origin;
    await context.grantPermissions(["camera", "microphone"], { origin: origin });

    pages = [await context.newPage(), await context.newPage()];
    pages.forEach(function (page, index) {
      const label = index === 0 ? "sender" : "receiver";
      page.on("console", function (msg) { consoleLines.push(label + " " + msg.type() + ": " + msg.text()); });
      page.on("pageerror", function (err) { consoleLines.push(label + " pageerror: " + err.message); });
    });
    const [senderPage, receiverPage] = pages;
    await Promise.all(pages.map(function (page) { return page.goto(options.pageUrl); }));

    const connectOptions = { server: options.server, transport: options.transport, relay: Boolean(options.relay) };
    const receiverOptions = Object.assign({}, connectOptions, {
      server: options.receiverServer || options.server,
      reconnection: Boolean(options.severUrl),
    });
    const run = async function () {
      const senderConnected = await senderPage.evaluate(function (o) { return window.privydropTest.connect(o); }, connectOptions);
      const roomId = await senderPage.evaluate(function () { return window.privydropTest.createRoom(); });
      // The sender is in the room before the receiver arrives, so the
      // receiver's join makes the server tell the sender `ready`.
      await senderPage.evaluate(function (id) { return window.privydropTest.join(id); }, roomId);
      const sending = senderPage.evaluate(function (o) { return window.privydropTest.send(o); },
        { size: options.size, seed: options.seed, pauseAfterBytes: options.severUrl ? options.size / 2 : 0 });
      const receiverConnected = await receiverPage.evaluate(function (o) { return window.privydropTest.connect(o); }, receiverOptions);
      const receiving = receiverPage.evaluate(function (o) { return window.privydropTest.receive(o); }, { roomId: roomId });
      // Awaited below; a failure meanwhile must not end the driver unreported.
      sending.catch(function () {});
      receiving.catch(function () {});
      let reconnect = null;
      if (options.severUrl) {
        await senderPage.evaluate(function () { return window.privydropTest.sendingPaused(); });
        const back = receiverPage.evaluate(function () { return window.privydropTest.reconnected(); });
        back.catch(function () {});
        const cut = await fetch(options.severUrl, { method: "POST" });
        if (!cut.ok) {
          throw new Error("sever answered " + cut.status);
        }
        reconnect = await back;
        await senderPage.evaluate(function () { return window.privydropTest.resumeSending(); });
      }
      const [sender, receiver] = await Promise.all([sending, receiving]);
      const peerDisconnectedBeforeLeaving = {
        sender: await senderPage.evaluate(function () { return window.privydropTest.peerDisconnectedSoFar(); }),
        receiver: await receiverPage.evaluate(function () { return window.privydropTest.peerDisconnectedSoFar(); }),
      };

      // The sender leaves; the receiver must hear about it from the server.
      const disconnectSeen = receiverPage.evaluate(function () { return window.privydropTest.peerDisconnected(); });
      await senderPage.evaluate(function () { return window.privydropTest.disconnect(); });
      const disconnect = await disconnectSeen;
      await receiverPage.evaluate(function () { return window.privydropTest.disconnect(); });
      return {
        ok: true,
        roomId: roomId,
        connected: { sender: senderConnected, receiver: receiverConnected },
        sender: sender,
        receiver: receiver,
        disconnect: disconnect,
        reconnect: reconnect,
        peerDisconnectedBeforeLeaving: peerDisconnectedBeforeLeaving,
      };
    };
    const result = await withTimeout(run(), options.timeoutMs || 30000, "browser transfer");
    result.console = consoleLines;
    return result;
  } catch (err) {
    const events = {};
    for (const [index, page] of pages.entries()) {
      events[index === 0 ? "sender" : "receiver"] = await page.evaluate(function () {
        return window.privydropTest ? window.privydropTest.events() : null;
      }).catch(function (e) { return String(e); });
    }
    return { ok: false, error: String(err && err.stack || err), events: events, console: consoleLines };
  } finally {
    if (context !== null) {
      await context.close().catch(function () {});
    }
    fs.rmSync(userDataDir, { recursive: true, force: true });
  }
}

main(JSON.parse(process.argv[2])).then(function (result) {
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exitCode = result.ok ? 0 : 1;
});
