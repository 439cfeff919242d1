/**
 * The comparison of one listed entry with its catalogue row, and the writes it leads to: what
 * changed, what is confirmed, discovered, unchanged or a MISSING candidate. No I/O: the pending
 * writes are taken out as one batch by the batch writer (batch-writer.ts).
 */
import { recordsExactly, rowEntry, type StorageRow } from '../../backends/entry-lines.ts';
import { scopeRowId, scopeRowNode, type ScopeRow } from '../../catalogue/nodes.ts';
import { newNodeFromStat, type NewNode } from '../../catalogue/node-writes.ts';
import type { Observation } from '../../catalogue/reconcile-writes.ts';
import type { CatalogueNode } from '../../catalogue/types.ts';
import type { ReconcileStrategy } from '../strategy.ts';
import type { ReconcileCounts } from '../types.ts';

/** One transaction's worth of catalogue writes that need their paths locked. */
export interface Writes {
  changes: Observation[];
  confirm: CatalogueNode[];
  discovered: NewNode[];
}
/** A batch handed to the writer: its writes, and the unchanged rows (ids) and hashes it records as checked. */
export interface Batch {
  writes: Writes;
  unchanged: number[];
  learned: Map<number, string>;
}
export const writesCount = (w: Writes) => w.changes.length + w.confirm.length + w.discovered.length;

/** Where the comparison puts what it found: the pending writes of the current batch, and the MISSING candidates. */
export class Comparison {
  // pending writes of the current batch
  changes: Observation[] = [];
  confirm: CatalogueNode[] = [];
  discovered: NewNode[] = [];
  unchanged: number[] = [];
  learned = new Map<number, string>();
  missingCandidates: CatalogueNode[] = [];
  /** A complete audit: unchanged rows are only counted (the mount's audit mark covers them). */
  countOnlyUnchanged = false;

  constructor(
    private readonly counts: ReconcileCounts,
    private readonly strategy: ReconcileStrategy,
    private readonly mountId: string,
  ) {}

  pendingWrites(): number {
    return this.changes.length + this.confirm.length + this.discovered.length + this.unchanged.length;
  }

  /** The pending writes, taken out as one batch. */
  takeBatch(): Batch {
    const batch: Batch = {
      writes: { changes: this.changes, confirm: this.confirm, discovered: this.discovered },
      unchanged: this.unchanged,
      learned: this.learned,
    };
    this.changes = [];
    this.confirm = [];
    this.discovered = [];
    this.unchanged = [];
    this.learned = new Map();
    return batch;
  }

  compare(stored: StorageRow | null, row: ScopeRow | null, sha256: string | null): void {
    this.counts.checked++;
    if (stored && row) {
      // Most rows of an audit are unchanged: the lines say so without building anything.
      if (sha256 === null && recordsExactly(row, stored)) {
        if (this.countOnlyUnchanged) this.counts.unchanged++;
        else this.unchanged.push(scopeRowId(row));
        return;
      }
      const seen = rowEntry(stored);
      const node = scopeRowNode(row, this.mountId);
      const changed =
        seen.kind !== node.kind ||
        this.strategy.differs(node, seen) ||
        (sha256 !== null && node.sha256 !== null && sha256 !== node.sha256);
      if (changed) {
        this.changes.push({ node, seen, sha256 });
        return;
      }
      const learned = sha256 !== null && node.sha256 === null;
      if (learned) this.learned.set(node.id, sha256);
      if (node.consistencyState !== 'ACTIVE') this.confirm.push(node);
      else if (learned || !this.countOnlyUnchanged) this.unchanged.push(node.id);
      else this.counts.unchanged++;
    } else if (stored) {
      this.discovered.push(newNodeFromStat(rowEntry(stored), sha256));
    } else if (row) {
      const node = scopeRowNode(row, this.mountId);
      if (node.consistencyState !== 'MISSING') this.missingCandidates.push(node);
      else if (this.countOnlyUnchanged) this.counts.unchanged++;
      else this.unchanged.push(node.id);
    }
  }
}
