/**
 * SQL range conditions over COLLATE "C" paths. A node's descendants are exactly the paths in
 * [dir + '/', dir + '0') because '0' is the byte after '/', so subtree queries are index
 * range scans on nodes_live_path.
 */
export function subtreeCondition(dir: string, firstParam: number, column = 'path'): { sql: string; params: string[] } {
  if (dir === '') return { sql: 'TRUE', params: [] };
  return {
    sql: `(${column} = $${firstParam} OR (${column} >= $${firstParam + 1} AND ${column} < $${firstParam + 2}))`,
    params: [dir, `${dir}/`, `${dir}0`],
  };
}

/** Strictly-below-dir condition (descendants only). */
export function descendantsCondition(dir: string, firstParam: number, column = 'path'): { sql: string; params: string[] } {
  if (dir === '') return { sql: `${column} <> ''`, params: [] };
  return {
    sql: `(${column} >= $${firstParam} AND ${column} < $${firstParam + 1})`,
    params: [`${dir}/`, `${dir}0`],
  };
}
