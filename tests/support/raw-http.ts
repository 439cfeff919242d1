import net from 'node:net';

/**
 * One kept-alive HTTP/1.1 connection read byte for byte, as a client library would frame it:
 * a response is its head, then exactly Content-Length bytes; whatever follows is the start of
 * the next response. What fetch would hide (surplus bytes, a body cut short on a connection
 * left open) shows here.
 */
export class RawConnection {
  private chunks: Buffer[] = [];
  private buffered = 0;
  private wake: (() => void) | null = null;
  /** True once the server closed (or reset) the connection. */
  closed = false;

  private constructor(private readonly socket: net.Socket) {
    socket.on('data', (chunk: Buffer) => {
      this.chunks.push(chunk);
      this.buffered += chunk.length;
      this.notify();
    });
    socket.on('close', () => {
      this.closed = true;
      this.notify();
    });
    socket.on('error', () => {}); // a reset is a close here
  }

  static async open(url: string): Promise<RawConnection> {
    const { hostname, port } = new URL(url);
    const socket = net.connect({ host: hostname, port: Number(port) });
    await new Promise<void>((resolve, reject) => {
      socket.once('connect', resolve);
      socket.once('error', reject);
    });
    return new RawConnection(socket);
  }

  send(pathAndQuery: string, headers: Record<string, string> = {}): void {
    const lines = [`GET ${pathAndQuery} HTTP/1.1`, 'Host: filestore.test', ...Object.entries(headers).map(([k, v]) => `${k}: ${v}`)];
    this.socket.write(`${lines.join('\r\n')}\r\n\r\n`);
  }

  /** Stops reading from the socket: the server's writes back up once the socket buffers are full. */
  pause(): void {
    this.socket.pause();
  }

  resume(): void {
    this.socket.resume();
  }

  /** The next response head; throws when what comes is no HTTP response (e.g. surplus body bytes). */
  async head(): Promise<{ status: number; headers: Record<string, string> }> {
    let end = -1;
    for (;;) {
      end = this.peek(64 * 1024).indexOf('\r\n\r\n');
      if (end >= 0) break;
      if (this.closed) throw new Error(`the connection closed before a response head (${this.buffered} bytes pending)`);
      await this.next();
    }
    const text = this.take(end + 4).toString('latin1');
    const [statusLine = '', ...fields] = text.trimEnd().split('\r\n');
    const m = /^HTTP\/1\.1 (\d{3}) /.exec(statusLine);
    if (!m) throw new Error(`not an HTTP response: ${JSON.stringify(statusLine.slice(0, 80))}`);
    const headers: Record<string, string> = {};
    for (const f of fields) {
      const colon = f.indexOf(':');
      headers[f.slice(0, colon).toLowerCase()] = f.slice(colon + 1).trim();
    }
    return { status: Number(m[1]), headers };
  }

  /**
   * Up to `length` body bytes: all of them, or what came before the server closed the
   * connection. `stalled` when neither happens within `stallMs` of the last byte (a body cut
   * short on a connection the server keeps open: the client would wait forever).
   */
  async body(length: number, stallMs = 20_000): Promise<{ bytes: Buffer; complete: boolean; stalled: boolean }> {
    while (this.buffered < length && !this.closed) {
      let timer: NodeJS.Timeout | undefined;
      const arrived = await Promise.race([this.next().then(() => true), new Promise<false>((r) => (timer = setTimeout(() => r(false), stallMs)))]);
      clearTimeout(timer);
      if (!arrived) return { bytes: this.take(this.buffered), complete: false, stalled: true };
    }
    const bytes = this.take(Math.min(length, this.buffered));
    return { bytes, complete: bytes.length === length, stalled: false };
  }

  close(): void {
    this.socket.destroy();
  }

  private next(): Promise<void> {
    return new Promise((resolve) => (this.wake = resolve));
  }

  private notify(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private peek(n: number): Buffer {
    if (this.chunks.length > 1) this.chunks = [Buffer.concat(this.chunks)];
    return (this.chunks[0] ?? Buffer.alloc(0)).subarray(0, n);
  }

  private take(n: number): Buffer {
    const all = Buffer.concat(this.chunks);
    this.chunks = n < all.length ? [all.subarray(n)] : [];
    this.buffered = all.length - n;
    return all.subarray(0, n);
  }
}
