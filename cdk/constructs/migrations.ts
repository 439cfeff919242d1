import type { Duration } from 'aws-cdk-lib';
import type * as lambda from 'aws-cdk-lib/aws-lambda';
import * as triggers from 'aws-cdk-lib/triggers';
import { Construct, type IConstruct } from 'constructs';

/**
 * The migrations at deploy (SPEC §11): a CDK trigger invoking the migrate function (a plain
 * invoke: lambdas/migrate.ts applies what is pending, a throw fails the deploy), after the
 * database and its proxy exist and before every handler, event source and the API: a deploy
 * whose migrations fail changes no handler, and no handler ever runs against an older schema.
 * It runs again whenever the migrate function's code changes (new migrations ship in it).
 */
export class Migrations extends Construct {
  readonly trigger: triggers.Trigger;

  constructor(scope: Construct, id: string, props: { migrate: lambda.Function; timeout: Duration; after: IConstruct[]; before: IConstruct[] }) {
    super(scope, id);
    this.trigger = new triggers.Trigger(this, 'Migrate', {
      handler: props.migrate,
      executeAfter: props.after,
      executeOnHandlerChange: true,
      invocationType: triggers.InvocationType.REQUEST_RESPONSE,
      timeout: props.timeout,
    });
    this.trigger.executeBefore(...props.before);
  }
}
