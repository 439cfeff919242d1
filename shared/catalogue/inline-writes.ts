import pg from 'pg';
import type { NewEvent } from './outbox.ts';
import { insertedDeltas } from './rollups.ts';
import type { CatalogueNode } from './types.ts';

/*
 * Statements as text, for the simple protocol: several of them go to the server in ONE round
 * trip (`stmt1; stmt2; …; COMMIT`), which parameters cannot. Every value is written in through
 * pg's escapeLiteral (strings: paths, JSON texts, ids) or as a checked integer, never pasted
 * raw. Each builds the same statement as the parameterised writer it names, so the rows are
 * the same whichever is used.
 */

/** A string as a SQL literal. */
export const lit = (s: string): string => pg.escapeLiteral(s);

/** An integer as SQL text; anything else is refused (it would be pasted into a statement). */
export function int(n: number): string {
  if (!Number.isSafeInteger(n)) throw new TypeError(`not an integer: ${String(n)}`);
  return String(n);
}

const textArray = (values: readonly string[], type: string) => `ARRAY[${values.map(lit).join(',')}]::${type}[]`;
const intArray = (values: readonly number[], type: string) => `ARRAY[${values.map(int).join(',')}]::${type}[]`;

/** appendEvents (outbox.ts) as text: the events in their order, data as one JSON array. */
export function appendEventsSql(events: readonly NewEvent[]): string | null {
  if (events.length === 0) return null;
  return `INSERT INTO filestore.outbox (mount_id, type, data)
     SELECT t.mount_id, t.type, d.data
       FROM unnest(${textArray(
         events.map((e) => e.mountId),
         'uuid',
       )}, ${textArray(
         events.map((e) => e.type),
         'text',
       )}) WITH ORDINALITY AS t(mount_id, type, n)
       JOIN json_array_elements(${lit(JSON.stringify(events.map((e) => e.data)))}::json) WITH ORDINALITY AS d(data, n) ON d.n = t.n
      ORDER BY t.n`;
}

/** addInsertedToAncestors (rollups.ts) as text: one delta per ancestor directory of the inserted nodes. */
export function addInsertedToAncestorsSql(mountId: string, nodes: ReadonlyArray<Pick<CatalogueNode, 'path' | 'kind' | 'sizeBytes'>>): string | null {
  const acc = insertedDeltas(nodes);
  if (acc.size === 0) return null;
  const totals = [...acc.values()];
  return `INSERT INTO filestore.rollup_deltas (node_id, size_bytes, file_count, dir_count, child_count)
     SELECT a.id, d.size_bytes, d.file_count, d.dir_count, d.child_count
       FROM unnest(${textArray([...acc.keys()], 'text')}, ${intArray(
         totals.map((t) => t.size),
         'bigint',
       )}, ${intArray(
         totals.map((t) => t.files),
         'int',
       )}, ${intArray(
         totals.map((t) => t.dirs),
         'int',
       )}, ${intArray(
         totals.map((t) => t.children),
         'int',
       )}) AS d(path, size_bytes, file_count, dir_count, child_count)
       CROSS JOIN LATERAL (SELECT a.id FROM filestore.nodes a
                            WHERE a.mount_id = ${lit(mountId)} AND a.path = d.path AND a.deleted_at IS NULL AND a.kind = 'directory' LIMIT 1) a`;
}
