import { type ChildProcess, spawn } from "node:child_process";
import { mkdtempSync, readFileSync, rmSync } from "node:fs";
import https from "node:https";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import * as grpc from "@grpc/grpc-js";
import * as protoLoader from "@grpc/proto-loader";
import { afterAll, describe, expect, it } from "vitest";
import { PROTO_OPTIONS, PROTO_PATH } from "../src/grpc/server.js";
import { makeCert } from "./tls-cert.js";

const CLI = fileURLToPath(new URL("../dist/cli/main.js", import.meta.url));
const children: ChildProcess[] = [];
const dir = mkdtempSync(join(tmpdir(), "sluice-cli-tls-"));

function serve(args: string[]) {
  const child = spawn(process.execPath, [CLI, "serve", "--port", "0", "--log-level", "warn", ...args], {
    stdio: ["ignore", "pipe", "pipe"],
  });
  children.push(child);
  const r = {
    child,
    out: "",
    err: "",
    exit: new Promise<number | null>((res) => child.on("exit", (c) => res(c))),
  };
  child.stdout?.on("data", (d: Buffer) => {
    r.out += d.toString();
  });
  child.stderr?.on("data", (d: Buffer) => {
    r.err += d.toString();
  });
  return r;
}

async function until(cond: () => boolean, ms = 15_000) {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error("timed out");
    await new Promise((r) => setTimeout(r, 20));
  }
}

afterAll(() => {
  for (const c of children) if (c.exitCode === null) c.kill("SIGTERM");
  rmSync(dir, { recursive: true, force: true });
});

describe("sluice serve --grpc-port --tls-cert --tls-key", () => {
  it("serves HTTPS and gRPC (TLS) from the flags", async () => {
    const { cert, key } = makeCert(dir);
    const ca = readFileSync(cert);
    const r = serve(["--grpc-port", "0", "--tls-cert", cert, "--tls-key", key]);
    await until(() => /gRPC listening on \S+/.test(r.out));
    const url = /sluice listening on (\S+)/.exec(r.out)?.[1] as string;
    const grpcAddr = /gRPC listening on (\S+)/.exec(r.out)?.[1] as string;
    expect(url.startsWith("https://")).toBe(true);
    const health = await new Promise<string>((resolve, reject) => {
      https
        .get(`${url}/healthz`, { ca }, (res) => {
          let b = "";
          res.on("data", (d) => {
            b += d;
          });
          res.on("end", () => resolve(b));
        })
        .on("error", reject);
    });
    expect(JSON.parse(health)).toEqual({ status: "ok" });
    const def = protoLoader.loadSync(PROTO_PATH, PROTO_OPTIONS);
    const pkg = grpc.loadPackageDefinition(def) as unknown as {
      sluice: { v1: { Sluice: grpc.ServiceClientConstructor } };
    };
    const client = new pkg.sluice.v1.Sluice(grpcAddr, grpc.credentials.createSsl(ca)) as unknown as {
      Start: (req: unknown, cb: (err: grpc.ServiceError | null, v: { id: string }) => void) => void;
      close(): void;
    };
    const info = await new Promise<{ id: string }>((resolve, reject) =>
      client.Start({ model: "demo", messages: [{ role: "user", content: "hi" }] }, (err, v) =>
        err ? reject(err) : resolve(v),
      ),
    );
    expect(info.id).toMatch(/^st_/);
    client.close();
    r.child.kill("SIGTERM");
    expect(await r.exit).toBe(0);
  });

  it("refuses half a TLS pair or an unreadable certificate with exit 2", async () => {
    const half = serve(["--tls-cert", join(dir, "cert.pem")]);
    expect(await half.exit).toBe(2);
    expect(half.err).toContain("--tls-cert and --tls-key go together");
    const missing = serve(["--tls-cert", join(dir, "nope.pem"), "--tls-key", join(dir, "nope.pem")]);
    expect(await missing.exit).toBe(2);
    expect(missing.err).toMatch(/cannot read tls\.cert/);
  });
});
