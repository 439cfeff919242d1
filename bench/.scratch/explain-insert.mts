// scratch: EXPLAIN ANALYZE of insertNodes (generic plan, as the pool runs it) on a 100k-node mount
import pg from 'pg';
import { createPool } from '../../shared/db/pool.ts';
import { insertNodes } from '../../shared/catalogue/node-writes.ts';
import { touchedSince } from '../../shared/catalogue/reconcile-writes.ts';
const pool = createPool('postgres://postgres@127.0.0.1:5432/filestore_bench', 2);
const { rows } = await pool.query(`SELECT id FROM filestore.mounts WHERE key = 'bench-audit-explain'`);
const mountId = rows[0].id as string;
const client = await pool.connect();
const proto = pg.Client.prototype as any;
const original = proto.query;
let explain = true;
proto.query = function (this: any, ...args: any[]) {
  const first = args[0];
  if (explain && typeof first === 'object' && typeof first.text === 'string' && first.text.includes('INSERT INTO filestore.nodes')) {
    args[0] = { text: `EXPLAIN (ANALYZE, BUFFERS) ${first.text}`, values: first.values };
    return original.apply(this, args).then((r: any) => { console.log(r.rows.map((x: any) => x['QUERY PLAN']).join('\n')); return { rows: [] }; });
  }
  if (explain && typeof first === 'string' && first.includes('SELECT DISTINCT path FROM filestore.nodes')) {
    args[0] = `EXPLAIN (ANALYZE, BUFFERS) ${first}`;
    return original.apply(this, args).then((r: any) => { console.log(r.rows.map((x: any) => x['QUERY PLAN']).join('\n')); return { rows: [] }; });
  }
  return original.apply(this, args);
};
await client.query('BEGIN');
const nodes = Array.from({ length: 500 }, (_, i) => ({ path: `d050/new-${i}`, kind: 'file' as const, sizeBytes: 10, sha256: null, etag: null, mode: 33188, uid: 0, gid: 0, mtime: new Date() }));
const t0 = performance.now();
await insertNodes(client, mountId, nodes, { reconciliationJobId: null }, 'ignore');
console.log('insertNodes ms', performance.now() - t0);
await touchedSince(client, { mountId, jobId: 1, scanStartedAt: new Date(Date.now() - 3600e3) }, nodes.map((n) => n.path));
await client.query('ROLLBACK');
client.release();
await pool.end();
