// What the shells may use of metrics: the Lambdas' EMF implementation.
export { EmfMetrics } from './emf.ts';
