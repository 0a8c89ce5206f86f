// MCP latency figures (bench/mcp.sh): `tools/call run_python` through the
// official TypeScript SDK over stdio, for ROUNDS sessions: the first call of
// a session (boots the sandbox and the interpreter) and the median of the
// later ones. Prints "first_ms V" and "later_ms V" lines per round.
//   BOXLITE_CLI=build/boxlite node bench.mjs ROUNDS LATER
import { Client } from "@modelcontextprotocol/sdk/client/index.js";
import { StdioClientTransport } from "@modelcontextprotocol/sdk/client/stdio.js";

const rounds = Number(process.argv[2] || 3), later = Number(process.argv[3] || 10);
const median = (a) => { const s = [...a].sort((x, y) => x - y); const m = s.length >> 1; return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2; };
for (let r = 0; r < rounds; r++) {
	const transport = new StdioClientTransport({ command: process.env.BOXLITE_CLI, args: ["mcp"], env: process.env, stderr: "inherit" });
	const client = new Client({ name: "boxlite-bench", version: "1.0.0" });
	await client.connect(transport);
	const call = async (code) => {
		const t0 = performance.now();
		const res = await client.callTool({ name: "run_python", arguments: { code } }, undefined, { timeout: 600000 });
		if (res.isError) throw new Error(JSON.stringify(res));
		return performance.now() - t0;
	};
	console.log(`first_ms ${(await call("x = 1")).toFixed(1)}`);
	const t = [];
	for (let i = 0; i < later; i++) t.push(await call("x += 1\nx"));
	console.log(`later_ms ${median(t).toFixed(1)}`);
	const pid = transport.pid;
	await client.close();
	while (true) { try { process.kill(pid, 0); } catch { break; } await new Promise((res) => setTimeout(res, 50)); }
}
