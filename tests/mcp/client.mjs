// The MCP test client: the official TypeScript SDK (Client over
// StdioClientTransport) drives `boxlite mcp` through the cases below and
// prints one line per case, "ok NAME" or "FAIL NAME: why", then
// "server-pid N" and "done P passed F failed". Run by
// tests/integration/test_mcp.c from BUILD/mcp-node (tests/mcp/setup.sh).
//   BOXLITE_CLI=build/boxlite node client.mjs [server flags...]
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const LONG = { timeout: 600000 }; // the first call boots the VM under TCG
let passed = 0, failed = 0;

function check(cond, what) {
	if (!cond) throw new Error(what);
}

async function kase(name, fn) {
	try {
		await fn();
		passed++;
		console.log(`ok ${name}`);
	} catch (e) {
		failed++;
		console.log(`FAIL ${name}: ${String(e && e.stack || e).split("\n").slice(0, 3).join(" | ")}`);
	}
}

function text(res) {
	return res.content.filter((c) => c.type === "text").map((c) => c.text).join("");
}

const transport = new StdioClientTransport({
	command: process.env.BOXLITE_CLI,
	args: ["mcp", ...process.argv.slice(2)],
	env: process.env,
	stderr: "inherit",
});
const client = new Client({ name: "boxlite-test", version: "1.0.0" });

await kase("initialize", async () => {
	await client.connect(transport);
	const info = client.getServerVersion();
	check(info && info.name === "boxlite", `serverInfo ${JSON.stringify(info)}`);
	check(client.getServerCapabilities().tools, "no tools capability");
	check(typeof client.getInstructions() === "string", "no instructions");
});

await kase("ping", async () => {
	await client.ping();
});

await kase("list_tools", async () => {
	const { tools } = await client.listTools();
	const names = tools.map((t) => t.name).sort();
	const want = ["list_dir", "read_file", "reset", "run_command", "run_python", "write_file"];
	check(JSON.stringify(names) === JSON.stringify(want), `tools ${names}`);
	for (const t of tools) {
		check(t.inputSchema.type === "object", `${t.name} schema`);
		check(t.description && t.description.length > 20, `${t.name} description`);
	}
	const py = tools.find((t) => t.name === "run_python");
	check(py.inputSchema.required.includes("code"), "run_python requires code");
});

await kase("python_state", async () => {
	const a = await client.callTool({ name: "run_python", arguments: { code: "x = 41" } }, undefined, LONG);
	check(!a.isError, `first call: ${text(a)}`);
	const b = await client.callTool({ name: "run_python", arguments: { code: "x + 1" } }, undefined, LONG);
	check(!b.isError, `second call: ${text(b)}`);
	check(b.structuredContent.stdout === "42\n", `stdout ${JSON.stringify(b.structuredContent)}`);
	check(b.structuredContent.exit_code === 0, "exit code");
	check(text(b).startsWith("42\n"), `text ${JSON.stringify(text(b))}`);
});

await kase("python_exception", async () => {
	const r = await client.callTool({ name: "run_python", arguments: { code: "1/0" } }, undefined, LONG);
	check(r.isError === true, "isError");
	check(r.structuredContent.exit_code === 1, "exit code 1");
	check(r.structuredContent.stderr.includes("ZeroDivisionError"), "traceback");
});

await kase("command_exit_code", async () => {
	const r = await client.callTool({ name: "run_command", arguments: { command: ["sh", "-c", "echo out; echo err >&2; exit 3"] } }, undefined, LONG);
	check(r.isError === true, "isError for a non-zero exit");
	const s = r.structuredContent;
	check(s.exit_code === 3 && s.stdout === "out\n" && s.stderr === "err\n", JSON.stringify(s));
	check(text(r).includes("[exit code 3"), text(r));
	const ok = await client.callTool({ name: "run_command", arguments: { command: "tr a-z A-Z", stdin: "shout\n" } }, undefined, LONG);
	check(!ok.isError && ok.structuredContent.stdout === "SHOUT\n", JSON.stringify(ok.structuredContent));
	const nf = await client.callTool({ name: "run_command", arguments: { command: ["no-such-program"] } }, undefined, LONG);
	check(nf.isError && nf.structuredContent.exit_code === 127, JSON.stringify(nf.structuredContent));
});

await kase("files", async () => {
	const body = "hello\nwörld\n";
	const w = await client.callTool({ name: "write_file", arguments: { path: "/tmp/mcp/dir/a.txt", content: body } }, undefined, LONG);
	check(!w.isError, `write: ${text(w)}`);
	const r = await client.callTool({ name: "read_file", arguments: { path: "/tmp/mcp/dir/a.txt" } }, undefined, LONG);
	check(!r.isError && text(r) === body, `read: ${JSON.stringify(text(r))}`);
	const bin = Buffer.from([0, 1, 2, 255, 254, 10, 0x80]).toString("base64");
	await client.callTool({ name: "write_file", arguments: { path: "/tmp/mcp/b.bin", content: bin, encoding: "base64" } }, undefined, LONG);
	const rb = await client.callTool({ name: "read_file", arguments: { path: "/tmp/mcp/b.bin", encoding: "base64" } }, undefined, LONG);
	check(text(rb) === bin, `base64 ${text(rb)}`);
	const rt = await client.callTool({ name: "read_file", arguments: { path: "/tmp/mcp/b.bin" } }, undefined, LONG);
	check(rt.isError && text(rt).includes("base64"), "binary as text is refused");
	const l = await client.callTool({ name: "list_dir", arguments: { path: "/tmp/mcp" } }, undefined, LONG);
	check(!l.isError && text(l).includes("dir") && text(l).includes("b.bin"), text(l));
	const missing = await client.callTool({ name: "read_file", arguments: { path: "/nope" } }, undefined, LONG);
	check(missing.isError && text(missing).includes("No such file"), text(missing));
	const py = await client.callTool({ name: "run_python", arguments: { code: "open('/tmp/mcp/dir/a.txt').read().upper()" } }, undefined, LONG);
	check(py.structuredContent.stdout.includes("HELLO"), "the interpreter sees the file");
});

await kase("timeout", async () => {
	const r = await client.callTool({ name: "run_python", arguments: { code: "import time\ntime.sleep(60)", timeout: 2 } }, undefined, LONG);
	check(r.isError && r.structuredContent.timed_out === true, JSON.stringify(r.structuredContent));
	check(text(r).includes("timed out"), text(r));
	const after = await client.callTool({ name: "run_python", arguments: { code: "x" } }, undefined, LONG);
	check(after.structuredContent.stdout === "41\n", "state kept after the interrupt");
	const c = await client.callTool({ name: "run_command", arguments: { command: "sleep 60", timeout: 1 } }, undefined, LONG);
	check(c.isError && c.structuredContent.timed_out === true, JSON.stringify(c.structuredContent));
});

await kase("bad_argument", async () => {
	let code = null;
	try {
		const r = await client.callTool({ name: "run_python", arguments: { code: 5 } }, undefined, LONG);
		code = r.isError ? "isError" : "accepted";
	} catch (e) {
		code = e.code;
	}
	check(code === -32602 || code === "isError", `got ${code}`);
	try {
		await client.callTool({ name: "run_command", arguments: { command: "true", timeout: -1 } }, undefined, LONG);
		code = "accepted";
	} catch (e) {
		code = e.code;
	}
	check(code === -32602, `negative timeout: ${code}`);
});

await kase("unknown_tool", async () => {
	let code = null, msg = "";
	try {
		await client.callTool({ name: "no_such_tool", arguments: {} }, undefined, LONG);
	} catch (e) {
		code = e.code;
		msg = e.message;
	}
	check(code === -32602 && msg.includes("no_such_tool"), `got ${code} ${msg}`);
});

await kase("cancel", async () => {
	const ac = new AbortController();
	const p = client.callTool({ name: "run_python", arguments: { code: "import time\ntime.sleep(300)" } }, undefined, { signal: ac.signal, timeout: 600000 });
	setTimeout(() => ac.abort("test"), 2000);
	let rejected = false;
	try {
		await p;
	} catch (e) {
		rejected = true;
	}
	check(rejected, "the cancelled call did not reject");
	// Runs are serialised: this one answers only if the cancel interrupted
	// the sleep (else it would wait out its 300 s and time out here).
	const r = await client.callTool({ name: "run_python", arguments: { code: "x * 1" } }, undefined, { timeout: 120000 });
	check(r.structuredContent.stdout === "41\n", JSON.stringify(r.structuredContent));
});

await kase("reset", async () => {
	const w = await client.callTool({ name: "run_command", arguments: { command: "touch /tmp/marker" } }, undefined, LONG);
	check(!w.isError, text(w));
	const r = await client.callTool({ name: "reset", arguments: {} }, undefined, LONG);
	check(!r.isError, text(r));
	const py = await client.callTool({ name: "run_python", arguments: { code: "x" } }, undefined, LONG);
	check(py.isError && py.structuredContent.stderr.includes("NameError"), "variables are gone");
	const f = await client.callTool({ name: "run_command", arguments: { command: "test -e /tmp/marker" } }, undefined, LONG);
	check(f.structuredContent.exit_code === 1, "files are gone");
});

const pid = transport.pid;
console.log(`server-pid ${pid}`);
await kase("close", async () => {
	await client.close();
	// The server removes its sandbox, then exits.
	const until = Date.now() + 120000;
	for (;;) {
		try {
			process.kill(pid, 0);
		} catch (e) {
			break;
		}
		check(Date.now() < until, "the server did not exit");
		await new Promise((r) => setTimeout(r, 100));
	}
});

console.log(`done ${passed} passed ${failed} failed`);
process.exit(failed ? 1 : 0);
