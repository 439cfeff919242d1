/**
 * PostgreSQL with passwords and TLS in tests: the local server trusts every connection, so it
 * never asks for a password. This front speaks PostgreSQL's protocol before it: it asks each
 * connection for a cleartext password (recording it), optionally over TLS, then hands the
 * connection to the real server. Used to observe what a client sends under IAM auth (tokens
 * per new connection, TLS) — tests/lambda-support.test.ts, tests/agent-iam-database.test.ts.
 */
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import tls from 'node:tls';
import { TEST_DATABASE_URL } from './env.ts';

/** A self-signed certificate for 127.0.0.1 (openssl), its key, and the path of its PEM (the CA to trust). */
export interface TestCertificate {
  key: string;
  cert: string;
  caPath: string;
  remove(): void;
}

export function makeTestCertificate(): TestCertificate {
  const dir = mkdtempSync(path.join(os.tmpdir(), 'filestore-iam-'));
  const made = spawnSync(
    'openssl',
    ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes', '-days', '1', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1', '-keyout', 'key.pem', '-out', 'cert.pem'],
    { cwd: dir, encoding: 'utf8' },
  );
  if (made.status !== 0) throw new Error(`openssl: ${made.stderr}`);
  return {
    key: readFileSync(path.join(dir, 'key.pem'), 'utf8'),
    cert: readFileSync(path.join(dir, 'cert.pem'), 'utf8'),
    caPath: path.join(dir, 'cert.pem'),
    remove: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export interface PasswordFront {
  port: number;
  /** The password each connection sent, in order. */
  passwords: string[];
  /** The application_name of each connection's startup message, in the order of `passwords`. */
  applications: string[];
  close(): Promise<void>;
}

/** Reads PostgreSQL's framed messages from a socket until detached. */
class Frames {
  private buffer = Buffer.alloc(0);
  private waiter: (() => void) | null = null;
  private readonly onData = (chunk: Buffer) => {
    this.buffer = Buffer.concat([this.buffer, chunk]);
    this.waiter?.();
  };
  constructor(private readonly socket: net.Socket) {
    socket.on('data', this.onData);
  }
  /** A message without a type byte (the first of a connection): int32 length (itself included), body. */
  async untyped(): Promise<Buffer> {
    const length = (await this.bytes(4)).readInt32BE(0);
    await this.bytes(length);
    return this.take(length);
  }
  /** A typed message: type byte, int32 length, body. */
  async typed(): Promise<{ type: string; body: Buffer }> {
    const length = (await this.bytes(5)).readInt32BE(1);
    await this.bytes(1 + length);
    const m = this.take(1 + length);
    return { type: String.fromCharCode(m[0] as number), body: m.subarray(5) };
  }
  detach(): Buffer {
    this.socket.off('data', this.onData);
    return this.take(this.buffer.length);
  }
  private async bytes(n: number): Promise<Buffer> {
    while (this.buffer.length < n) await new Promise<void>((resolve) => (this.waiter = resolve));
    return this.buffer;
  }
  private take(n: number): Buffer {
    const out = this.buffer.subarray(0, n);
    this.buffer = this.buffer.subarray(n);
    return out;
  }
}

const SSL_REQUEST = 80_877_103;

export async function startPasswordFront(o: { tls?: { key: string; cert: string } } = {}): Promise<PasswordFront> {
  const passwords: string[] = [];
  const applications: string[] = [];
  const sockets = new Set<net.Socket>();
  const track = (s: net.Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
    s.on('error', () => s.destroy());
  };
  const serve = async (raw: net.Socket) => {
    let socket: net.Socket = raw;
    let frames = new Frames(raw);
    let startup = await frames.untyped();
    if (startup.length === 8 && startup.readInt32BE(4) === SSL_REQUEST) {
      if (!o.tls) {
        raw.write('N');
      } else {
        frames.detach();
        raw.write('S');
        socket = new tls.TLSSocket(raw, { isServer: true, key: o.tls.key, cert: o.tls.cert });
        track(socket);
        frames = new Frames(socket);
      }
      startup = await frames.untyped();
    }
    socket.write(Buffer.from([0x52, 0, 0, 0, 8, 0, 0, 0, 3])); // AuthenticationCleartextPassword
    const answer = await frames.typed();
    if (answer.type !== 'p') throw new Error(`expected a password message, got ${answer.type}`);
    passwords.push(answer.body.subarray(0, answer.body.length - 1).toString('utf8'));
    // The startup message's body after its protocol version: name\0value\0 pairs.
    const params = startup.subarray(8).toString('utf8').split('\0');
    const at = params.indexOf('application_name');
    applications.push(at === -1 ? '' : (params[at + 1] ?? ''));
    const upstream = net.connect(5432, new URL(TEST_DATABASE_URL).hostname);
    track(upstream);
    upstream.write(startup);
    const rest = frames.detach();
    if (rest.length > 0) upstream.write(rest);
    socket.pipe(upstream);
    upstream.pipe(socket);
    const closeBoth = () => {
      socket.destroy();
      upstream.destroy();
    };
    socket.on('close', closeBoth);
    upstream.on('close', closeBoth);
  };
  const server = net.createServer((raw) => {
    track(raw);
    serve(raw).catch(() => raw.destroy());
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as net.AddressInfo).port,
    passwords,
    applications,
    close: async () => {
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
