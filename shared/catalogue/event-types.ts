/**
 * The event types of SPEC §5: what the outbox records and the bus carries, and what the typed
 * client names (it imports this type, erased at run time: one list, not a copy per side).
 */
export type EventType =
  | 'filestore.node.created'
  | 'filestore.node.updated'
  | 'filestore.node.moved'
  | 'filestore.node.copied'
  | 'filestore.node.deleted'
  | 'filestore.command.completed'
  | 'filestore.drift.detected'
  | 'filestore.node.reconciled'
  | 'filestore.node.missing'
  // Contract change (docs/api.md, "Events"): nodes a reconciliation discovered in bulk, together.
  | 'filestore.nodes.discovered';
