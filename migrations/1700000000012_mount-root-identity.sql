-- Up Migration
-- The identity (device:inode) of a local mount's root directory as its catalogue was last
-- audited against (shared/catalogue/root-identity.ts). A root found to be another directory
-- (an empty mount point where a disk was unmounted, a directory made anew) is not judged by
-- directory jobs, and only a full audit that completes accepts it. NULL until first seen.
ALTER TABLE filestore.mounts ADD COLUMN root_identity text;

-- Down Migration
ALTER TABLE filestore.mounts DROP COLUMN root_identity;
