import net from 'node:net';

/**
 * A TCP proxy in front of a real server (PostgreSQL here) that a test can take down and bring
 * back: `down()` cuts every open connection and refuses new ones (nothing listens), `up()`
 * listens again on the same port. What a service going away looks like to its clients,
 * without stopping the machine's server that others use.
 */
export interface TcpProxy {
  port: number;
  /** Connections passed on to the target so far (what a test counts to see how many a client opened). */
  readonly accepted: number;
  down(): Promise<void>;
  /** Listens again; with `drop`, every connection is accepted and closed at once (a server that dies as you connect). */
  up(o?: { drop?: boolean }): Promise<void>;
  close(): Promise<void>;
}

export async function startTcpProxy(target: { host: string; port: number }): Promise<TcpProxy> {
  const sockets = new Set<net.Socket>();
  let server: net.Server | null = null;
  let port = 0;
  let accepted = 0;
  const listen = async (o: { drop?: boolean } = {}) => {
    const s = net.createServer((client) => {
      if (o.drop) {
        client.destroy();
        return;
      }
      accepted++;
      const upstream = net.connect(target.port, target.host);
      for (const sock of [client, upstream]) {
        sockets.add(sock);
        sock.on('close', () => sockets.delete(sock));
        sock.on('error', () => {
          client.destroy();
          upstream.destroy();
        });
      }
      client.pipe(upstream);
      upstream.pipe(client);
    });
    await new Promise<void>((resolve, reject) => {
      s.once('error', reject);
      s.listen(port, '127.0.0.1', () => resolve());
    });
    port = (s.address() as net.AddressInfo).port;
    server = s;
  };
  const stop = async () => {
    const s = server;
    server = null;
    for (const sock of sockets) sock.destroy();
    sockets.clear();
    if (s) await new Promise<void>((resolve) => s.close(() => resolve()));
  };
  await listen();
  return {
    get port() {
      return port;
    },
    get accepted() {
      return accepted;
    },
    down: stop,
    up: listen,
    close: stop,
  };
}
