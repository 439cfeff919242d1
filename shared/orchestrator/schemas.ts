import { z } from 'zod';
import { FilestoreError } from '../errors.ts';
import { jsonValueProblem, vouchFor } from '../json-value.ts';
import { normalizePath } from '../paths.ts';

/**
 * Command inputs, validated once at the orchestrator's edge (the HTTP API reuses these
 * schemas). Paths are then canonicalised by normalizePath (SPEC §2).
 */
const version = z.number().int().min(0);
const sha256 = z.string().regex(/^[0-9a-f]{64}$/, 'must be 64 lowercase hex digits');

export const MkdirInput = z.object({ path: z.string(), parents: z.boolean().optional() }).strict();
export const DeleteInput = z
  .object({ path: z.string(), recursive: z.boolean().optional(), expectedVersion: version.optional() })
  .strict();
export const TransferInput = z
  .object({
    path: z.string(),
    targetPath: z.string(),
    targetMountId: z.string().optional(),
    overwrite: z.boolean().optional(),
    expectedVersion: version.optional(),
  })
  .strict();
export const WriteFileInput = z
  .object({ path: z.string(), expectedVersion: version.optional(), expectedSha256: sha256.optional() })
  .strict();
export const UpdateMetadataInput = z
  .object({
    path: z.string(),
    set: z.record(z.string().min(1).max(256), z.unknown()).optional(),
    unset: z.array(z.string().min(1).max(256)).optional(),
    expectedVersion: version.optional(),
  })
  .strict();

/** Parses `input` with `schema`, turning problems into VALIDATION_ERROR and paths into canonical form. */
export function parseInput<S extends z.ZodType>(schema: S, input: unknown): z.infer<S> {
  const parsed = schema.safeParse(input);
  if (!parsed.success) {
    throw new FilestoreError('VALIDATION_ERROR', parsed.error.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; '));
  }
  const value = parsed.data as Record<string, unknown>;
  for (const key of ['path', 'targetPath']) {
    if (typeof value[key] === 'string') value[key] = normalizePath(value[key]);
  }
  // What is journaled (and stored as metadata) must be storable as jsonb and safe to walk.
  const problem = jsonValueProblem(value);
  if (problem) throw new FilestoreError('VALIDATION_ERROR', `${problem.at}: ${problem.problem}`);
  return vouchFor(value) as z.infer<S>;
}
