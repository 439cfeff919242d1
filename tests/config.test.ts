import { describe, expect, it } from 'vitest';
import { loadConfig } from '../shared/config.ts';

const base = { FILESTORE_ALLOW_INLINE: 'true' };

describe('configuration', () => {
  it('FILESTORE_WATCH_BACKEND takes a choice for every mount, then per mount key', () => {
    expect(loadConfig({ ...base }).FILESTORE_WATCH_BACKEND).toEqual({ default: 'auto', perMount: {} });
    expect(loadConfig({ ...base, FILESTORE_WATCH_BACKEND: 'parcel' }).FILESTORE_WATCH_BACKEND).toEqual({ default: 'parcel', perMount: {} });
    expect(loadConfig({ ...base, FILESTORE_WATCH_BACKEND: 'auto, projects=parcel,scratch=chokidar' }).FILESTORE_WATCH_BACKEND).toEqual({
      default: 'auto',
      perMount: { projects: 'parcel', scratch: 'chokidar' },
    });
  });

  it('a bad watcher choice stops with a CONFIG_ERROR naming the variable and the part', () => {
    expect(() => loadConfig({ ...base, FILESTORE_WATCH_BACKEND: 'auto,projects=inotify' })).toThrow(
      expect.objectContaining({ code: 'CONFIG_ERROR', message: expect.stringMatching(/FILESTORE_WATCH_BACKEND.*projects=inotify/) }),
    );
    expect(() => loadConfig({ ...base, FILESTORE_WATCH_BACKEND: '=parcel' })).toThrow(expect.objectContaining({ code: 'CONFIG_ERROR' }));
  });
});
