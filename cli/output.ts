import { createRequire } from 'node:module';
import type cliProgressModule from 'cli-progress';
import type TableModule from 'cli-table3';
import type { Node } from '../shared/client/index.ts';

// The table and progress-bar packages (22 CommonJS files between them) are loaded the first
// time a table or a bar is drawn, not at start: `filestore --version` or `stat` never draws one.
const load = createRequire(import.meta.url);
const Table = (): typeof TableModule => load('cli-table3') as typeof TableModule;
const cliProgress = (): typeof cliProgressModule => load('cli-progress') as typeof cliProgressModule;

/** How the CLI shows things: tables for people, one JSON document for programs (`--json`). */

export interface JsonOption {
  json?: boolean;
}

export function printJson(value: unknown): void {
  process.stdout.write(`${JSON.stringify(value, null, 2)}\n`);
}

export function print(line = ''): void {
  process.stdout.write(`${line}\n`);
}

/** A borderless table (like `ls -l`): a header row, then the rows, columns padded. */
export function printTable(head: string[], rows: Array<Array<string | number>>): void {
  const table = new (Table())({
    head,
    chars: {
      top: '', 'top-mid': '', 'top-left': '', 'top-right': '',
      bottom: '', 'bottom-mid': '', 'bottom-left': '', 'bottom-right': '',
      left: '', 'left-mid': '', mid: '', 'mid-mid': '', right: '', 'right-mid': '', middle: '  ',
    },
    style: { 'padding-left': 0, 'padding-right': 0, head: process.stdout.isTTY ? ['bold'] : [], border: [] },
  });
  table.push(...rows.map((r) => r.map(String)));
  print(table.toString().split('\n').map((l) => l.trimEnd()).join('\n'));
}

/** A two-column `field  value` listing, for one thing (stat, a job, a mount). */
export function printFields(fields: Array<[string, string | number | null | undefined]>): void {
  const width = Math.max(...fields.map(([k]) => k.length));
  for (const [k, v] of fields) print(`${k.padEnd(width)}  ${v ?? '-'}`);
}

const UNITS = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];

/** 1536 → "1.5 KiB"; bytes under 1 KiB stay exact. */
export function humanSize(bytes: number): string {
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < UNITS.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${UNITS[unit]}`;
}

/**
 * An ISO timestamp as ISO 8601 in local time with its zone: `2026-12-06T20:34:19+01:00`, or
 * `2026-12-06T19:34:19Z` where local time is UTC (seconds; the --json output keeps milliseconds).
 * "-" for none.
 */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '-';
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const p = (n: number) => String(n).padStart(2, '0');
  const offset = -d.getTimezoneOffset();
  const zone = offset === 0 ? 'Z' : `${offset > 0 ? '+' : '-'}${p(Math.floor(Math.abs(offset) / 60))}:${p(Math.abs(offset) % 60)}`;
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}${zone}`;
}

/** A node's name as `ls` shows it: directories end in "/". */
export const displayName = (n: Node): string => `${n.name === '' ? '/' : n.name}${n.kind === 'directory' && n.name !== '' ? '/' : ''}`;

/** Size of a file, or the recursive size of a directory when its rollup is known. */
export const nodeSize = (n: Node): string =>
  n.kind === 'directory' ? (n.rollup ? humanSize(n.rollup.sizeBytes) : '-') : humanSize(n.sizeBytes);

/** Columns of `ls`. */
export const NODE_HEAD = ['name', 'kind', 'size', 'state', 'version', 'modified'];
export const nodeRow = (n: Node, name = displayName(n)): string[] => [
  name,
  n.kind,
  nodeSize(n),
  n.consistencyState,
  String(n.version),
  formatTime(n.mtime ?? n.updatedAt),
];

export interface Progress {
  update(done: number): void;
  stop(): void;
}

/** Shown only to a person: when stderr is a terminal and the transfer is big enough to wait for. */
export const PROGRESS_THRESHOLD = 1024 * 1024;

/** A byte-transfer progress bar on stderr, or nothing (not a TTY, small or unknown size). */
export function transferProgress(label: string, totalBytes: number | null): Progress {
  if (!process.stderr.isTTY || totalBytes === null || totalBytes < PROGRESS_THRESHOLD) return { update() {}, stop() {} };
  const bar = new (cliProgress().SingleBar)(
    {
      stream: process.stderr,
      format: `${label} [{bar}] {percentage}% | {done} / {size} | {eta_formatted}`,
      hideCursor: true,
      clearOnComplete: true,
    },
    cliProgress().Presets.shades_classic,
  );
  bar.start(totalBytes, 0, { done: humanSize(0), size: humanSize(totalBytes) });
  return {
    update: (done) => bar.update(done, { done: humanSize(done) }),
    stop: () => bar.stop(),
  };
}

/** A spinner and counter on stderr for work of unknown size (reconcile --wait); nothing when stderr is not a TTY. */
export function counterProgress(label: string): Progress {
  if (!process.stderr.isTTY) return { update() {}, stop() {} };
  const bar = new (cliProgress().SingleBar)(
    { stream: process.stderr, format: `${label} {spinner} {value} checked`, hideCursor: true, clearOnComplete: true },
    cliProgress().Presets.shades_classic,
  );
  const frames = ['|', '/', '-', '\\'];
  let tick = 0;
  bar.start(0, 0, { spinner: frames[0] });
  return {
    update: (done) => bar.update(done, { spinner: frames[tick++ % frames.length] }),
    stop: () => bar.stop(),
  };
}
