import { FilestoreError, type ErrorCode } from '../errors.ts';

/**
 * The message both backends give for a backend error code about `path`, or null for codes
 * whose message depends on the backend (STORAGE_ERROR: what failed and what to check).
 */
export function backendMessage(code: ErrorCode, path: string): string | null {
  const p = JSON.stringify(path);
  switch (code) {
    case 'NOT_FOUND':
      return `${p} does not exist on the mount`;
    case 'ALREADY_EXISTS':
      return `${p} already exists; pass overwrite to replace it`;
    case 'NOT_A_DIRECTORY':
      return `${p} or one of its parents is a file, not a directory`;
    case 'IS_A_DIRECTORY':
      return `${p} is a directory`;
    case 'DIRECTORY_NOT_EMPTY':
      return `${p} is a directory that is not empty; pass recursive to delete it with its contents`;
    case 'SYMLINK_IN_PATH':
      return `${p} goes through a symbolic link; Filestore never follows symlinks`;
    case 'MOVE_INTO_SELF':
      return `${p} cannot be moved or copied into itself or its own subtree`;
    default:
      return null;
  }
}

/**
 * A file changed while it was read (its size, mtime or ctime moved under the open handle, or
 * it ended early): the bytes read belong to no single version. Read it again.
 */
export class FileChangedError extends FilestoreError {
  constructor(path: string, op: string) {
    super('STORAGE_ERROR', `${JSON.stringify(path)} changed on storage while it was read; read it again`, { path, op, reason: 'changed-while-read' });
  }
}
