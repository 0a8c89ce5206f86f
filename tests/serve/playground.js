// Drives the playground page of `boxlite serve` in Debian's chromium
// (headless, through playwright-core): types the token and print(6*7), clicks
// Run, and waits for 42 and exit code 0. Usage:
//   node playground.js URL TOKEN SCREENSHOT   (NODE_PATH: where playwright-core is)
"use strict";
const { chromium } = require("playwright-core");
const fs = require("fs");
const os = require("os");
const path = require("path");

async function main() {
  const [url, token, shot] = process.argv.slice(2);
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), "boxlite-chromium-"));
  const ctx = await chromium.launchPersistentContext(profile, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
           "--disable-background-networking", "--disable-component-update", "--disable-sync"],
  });
  let ok = false;
  try {
    const page = ctx.pages()[0] || await ctx.newPage();
    const errors = [];
    page.on("pageerror", (e) => errors.push(String(e)));
    // Nothing but the server itself may be asked for.
    const origin = new URL(url).origin;
    const foreign = [];
    page.on("request", (r) => { if (!r.url().startsWith(origin)) foreign.push(r.url()); });
    await page.goto(url);
    await page.fill("#token", token);
    await page.fill("#code", "print(6*7)");
    await page.click("#run");
    await page.waitForFunction(() => document.getElementById("exit").textContent !== "-",
                               null, { timeout: 240000 });
    const out = await page.textContent("#output");
    const exit = await page.textContent("#exit");
    await page.screenshot({ path: shot, fullPage: true });
    console.log("output: " + JSON.stringify(out) + " exit: " + exit);
    console.log("screenshot: " + shot);
    if (errors.length) console.log("page errors: " + errors.join("; "));
    if (foreign.length) console.log("foreign requests: " + foreign.join(" "));
    ok = out.trim() === "42" && exit === "0" && !errors.length && !foreign.length;
    await page.click("#reset");
    await page.waitForFunction(() => /removed/.test(document.getElementById("status").textContent),
                               null, { timeout: 60000 });
  } finally {
    await ctx.close();
    fs.rmSync(profile, { recursive: true, force: true });
  }
  process.exit(ok ? 0 : 1);
}

main().catch((e) => { console.error(e); process.exit(2); });
