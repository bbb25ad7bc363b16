// Runs page.mjs (js-waku in a web page) in headless Chromium and relays what the page reports,
// for tests/tests/it/browser.rs.
//
//   node browser/run.mjs '<json arguments>'     (from tests/interop)
//
// Bundles the page with esbuild (into browser/dist/, git-ignored), serves it from an HTTP server
// on 127.0.0.1 (port 0), opens it in Debian's Chromium through playwright-core, and prints the
// page's events as JSON lines on stdout: {"event":"connected"|"ready"|"result"|"error", ...}.
// Browser console output and diagnostics go to stderr. Exits 0 after a result, 1 after an
// error (a missing Chromium, a failed bundle, a page error or the deadline).

import { build } from "esbuild";
import { chromium } from "playwright-core";
import { createServer } from "node:http";
import { existsSync } from "node:fs";
import { readFile, rename, mkdir } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

const here = dirname(fileURLToPath(import.meta.url));
const args = JSON.parse(process.argv[2] ?? "{}");
const TIMEOUT_MS = args.timeoutMs ?? 60_000;
const CHROMIUM = process.env.ROOST_CHROMIUM ?? "/usr/bin/chromium";

function emit(event, fields = {}) {
  process.stdout.write(JSON.stringify({ event, ...fields }) + "\n");
}

function log(...parts) {
  console.error("[browser]", ...parts);
}

function fail(message) {
  log("failed:", message);
  emit("error", { message });
  process.exit(1);
}

// One bundle per run (written aside, then renamed into place, so parallel runs never read a
// half-written file). Platform browser: esbuild picks the packages' browser builds, as an app's
// bundler does.
async function bundle() {
  const dist = join(here, "dist");
  await mkdir(dist, { recursive: true });
  const out = join(dist, "page.js");
  const tmp = join(dist, `page.${process.pid}.tmp`);
  await build({
    entryPoints: [join(here, "page.mjs")],
    bundle: true,
    format: "esm",
    platform: "browser",
    target: "chrome120",
    outfile: tmp,
    logLevel: "warning",
    define: { "process.env.NODE_ENV": '"production"' },
  });
  await rename(tmp, out);
  return readFile(out);
}

function serve(script) {
  const html = `<!doctype html><meta charset="utf-8"><title>Roost browser test</title>
<script type="module" src="/page.js"></script>`;
  const server = createServer((req, res) => {
    const path = new URL(req.url, "http://x").pathname;
    if (path === "/") {
      res.writeHead(200, { "content-type": "text/html; charset=utf-8" }).end(html);
    } else if (path === "/page.js") {
      res.writeHead(200, { "content-type": "text/javascript" }).end(script);
    } else if (path === "/favicon.ico") {
      res.writeHead(204).end();
    } else {
      res.writeHead(404).end();
    }
  });
  return new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve(server));
  });
}

const deadline = setTimeout(() => fail(`no result from the page within ${TIMEOUT_MS} ms`), TIMEOUT_MS);
deadline.unref();

if (!existsSync(CHROMIUM)) {
  fail(`no Chromium at ${CHROMIUM}: scripts/setup --test installs Debian's chromium package`);
}
let script;
try {
  script = await bundle();
} catch (error) {
  fail(`bundling browser/page.mjs with esbuild failed: ${error?.message ?? error}`);
}
const server = await serve(script);
const url = `http://127.0.0.1:${server.address().port}/#${encodeURIComponent(JSON.stringify(args))}`;

let browser;
try {
  // Playwright starts Chromium with a fresh profile of its own (--user-data-dir in a temp dir).
  // The extra flags keep Chromium from reaching out to Google's services (refused here, and
  // noise in any case).
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    timeout: 30_000,
    args: [
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
} catch (error) {
  fail(`starting Chromium (${CHROMIUM}) failed: ${error?.message ?? error}`);
}
log(`Chromium ${browser.version()}, page at ${url.split("#")[0]}`);

const finished = new Promise((resolve) => {
  (async () => {
    const page = await browser.newPage();
    page.on("console", (message) => log(`console.${message.type()}:`, message.text()));
    page.on("pageerror", (error) => resolve({ event: "error", message: `page error: ${error.message}` }));
    page.on("crash", () => resolve({ event: "error", message: "the page crashed" }));
    await page.exposeFunction("roostEmit", (event) => {
      if (event.event === "result" || event.event === "error") {
        resolve(event);
      } else {
        emit(event.event, event);
      }
    });
    await page.goto(url);
  })().catch((error) => resolve({ event: "error", message: String(error?.message ?? error) }));
});

const outcome = await finished;
await browser.close().catch(() => {});
server.close();
if (outcome.event === "error") {
  fail(outcome.message);
}
emit("result", outcome);
process.exit(0);
