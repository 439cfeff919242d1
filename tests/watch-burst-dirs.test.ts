import { burstSuite } from './support/watch-burst-suite.ts';

burstSuite('dirs');
