// Runs Debian's nginx on loopback with the project's own load-balancer config (deploy/nginx/nginx.conf):
// the same file, with only the replica addresses and the listen port substituted.
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), "..", "..");
export const nginxConfigFile = path.join(root, "deploy", "nginx", "nginx.conf");

/** The nginx binary, or null when it is not installed (.ci/run installs it). */
export function findNginx(): string | null {
  for (const dir of [...(process.env["PATH"] ?? "").split(path.delimiter), "/usr/sbin", "/usr/local/sbin"]) {
    const candidate = path.join(dir, "nginx");
    if (dir !== "" && existsSync(candidate)) return candidate;
  }
  return null;
}

const upstreamServerLine = /^(\s*)server\s+llm:8001(\s[^;]*)?;\s*$/m;
const listenLine = /^(\s*)listen\s+8080;\s*$/m;

function replaceOnce(text: string, pattern: RegExp, replacement: (match: RegExpExecArray) => string, what: string): string {
  const global = new RegExp(pattern.source, "gm");
  const count = [...text.matchAll(global)].length;
  if (count !== 1) throw new Error(`${nginxConfigFile}: expected exactly one ${what}, found ${count}`);
  const match = pattern.exec(text)!;
  return text.slice(0, match.index) + replacement(match) + text.slice(match.index + match[0].length);
}

/** deploy/nginx/nginx.conf with each upstream's `server llm:8001 ...;` -> one line per replica, `listen 8080` -> loopback. */
export function renderNginxConfig(replicas: readonly string[], listenPort: number, options: NginxOptions = {}): string {
  let text = readFileSync(nginxConfigFile, "utf8");
  // For comparison only: nginx's default balancing (round robin) where the file says least_conn.
  if (options.roundRobin) text = replaceOnce(text, /^\s*least_conn;\s*$/m, () => "", "`least_conn;` line");
  const upstreams = [...text.matchAll(/^\s*upstream\s+\S+\s*\{/gm)].length;
  const servers = [...text.matchAll(new RegExp(upstreamServerLine.source, "gm"))].length;
  if (upstreams === 0 || servers !== upstreams) throw new Error(`${nginxConfigFile}: expected one \`server llm:8001\` line per upstream (${upstreams} upstreams, ${servers} lines)`);
  text = text.replace(new RegExp(upstreamServerLine.source, "gm"),
    (_line, indent: string, options: string | undefined) => replicas.map((address) => `${indent}server ${address}${options ?? ""};`).join("\n"));
  text = replaceOnce(text, listenLine, (m) => `${m[1]}listen 127.0.0.1:${listenPort};`, "`listen 8080;` line");
  return text;
}

export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

export type NginxOptions = { roundRobin?: boolean };

export type NginxProcess = { child: ChildProcess; port: number; output: () => string; stop: () => Promise<void> };

/** Starts nginx in the foreground in a private prefix directory; resolves once its port accepts connections. */
export async function startNginx(binary: string, replicas: readonly string[], options: NginxOptions = {}): Promise<NginxProcess> {
  const port = await freePort();
  const prefix = mkdtempSync(path.join(os.tmpdir(), "bora-nginx-"));
  // Workers drop to nobody when the master runs as root: they need the temp directories.
  chmodSync(prefix, 0o755);
  for (const dir of ["body", "proxy", "fastcgi", "uwsgi", "scgi"]) {
    mkdirSync(path.join(prefix, dir));
    chmodSync(path.join(prefix, dir), 0o777);
  }
  writeFileSync(path.join(prefix, "bora.conf"), renderNginxConfig(replicas, port, options));
  // The main context the official image (and Debian) put around conf.d files; paths kept in the prefix.
  writeFileSync(path.join(prefix, "nginx.conf"), [
    "daemon off;",
    "worker_processes 1;",
    ...(process.getuid?.() === 0 ? ["user nobody nogroup;"] : []),
    `pid ${prefix}/nginx.pid;`,
    "error_log stderr warn;",
    "events { worker_connections 512; }",
    "http {",
    "  access_log off;",
    `  client_body_temp_path ${prefix}/body;`,
    `  proxy_temp_path ${prefix}/proxy;`,
    `  fastcgi_temp_path ${prefix}/fastcgi;`,
    `  uwsgi_temp_path ${prefix}/uwsgi;`,
    `  scgi_temp_path ${prefix}/scgi;`,
    `  include ${prefix}/bora.conf;`,
    "}",
    "",
  ].join("\n"));
  const check = spawnSync(binary, ["-t", "-p", prefix, "-c", path.join(prefix, "nginx.conf")], { encoding: "utf8" });
  if (check.status !== 0) throw new Error(`nginx -t failed:\n${check.stderr}`);
  const child = spawn(binary, ["-p", prefix, "-c", path.join(prefix, "nginx.conf")], { stdio: ["ignore", "pipe", "pipe"] });
  let text = "";
  child.stdout!.on("data", (c: Buffer) => { text += c.toString("utf8"); });
  child.stderr!.on("data", (c: Buffer) => { text += c.toString("utf8"); });
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  for (let attempt = 0; ; attempt++) {
    if (child.exitCode !== null) throw new Error(`nginx exited at start:\n${text}`);
    const open = await new Promise<boolean>((resolve) => {
      const socket = net.connect(port, "127.0.0.1", () => { socket.destroy(); resolve(true); });
      socket.once("error", () => resolve(false));
    });
    if (open) break;
    if (attempt >= 100) throw new Error(`nginx did not open 127.0.0.1:${port} in 10 s:\n${text}`);
    await new Promise((r) => setTimeout(r, 100));
  }
  return {
    child, port, output: () => text,
    async stop() {
      if (child.exitCode === null) child.kill("SIGQUIT");
      await Promise.race([exited, new Promise((r) => setTimeout(r, 5000))]);
      if (child.exitCode === null) child.kill("SIGKILL");
      rmSync(prefix, { recursive: true, force: true });
    },
  };
}
