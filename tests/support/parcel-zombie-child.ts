// tests/watch-no-zombies.test.ts: the agent's parcel backend watching argv[2] (started, then
// rewatched: two subscriptions), in a process of its own whose children the test inspects.
// Prints "watching" once both are up; stops when stdin closes.
import { ParcelBackend } from '../../agent/watch/backends/parcel.ts';

const backend = new ParcelBackend(process.argv[2] as string, { onEvents: () => {}, onProblem: (p) => console.error('problem', p) });
await backend.start();
await backend.rewatch();
console.log('watching');
process.stdin.resume();
process.stdin.on('end', () => void backend.close().then(() => process.exit(0)));
