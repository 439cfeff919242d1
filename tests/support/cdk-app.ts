import { App } from 'aws-cdk-lib';
import { Template } from 'aws-cdk-lib/assertions';
import { buildApp, DEFAULT_CONFIG } from '../../cdk/app.ts';
import { loadConfig, type FilestoreConfig } from '../../cdk/config.ts';
import type { FilestoreStack } from '../../cdk/stack.ts';

/** The example configuration's stack, synthesized once per test file (synthesis takes seconds). */
export interface BuiltStack {
  app: App;
  stack: FilestoreStack;
  config: FilestoreConfig;
  template: Template;
  json: CfnTemplate;
  nag: ReturnType<typeof buildApp>['nag'];
}

export interface CfnResource {
  Type: string;
  Properties?: Record<string, any>;
  DependsOn?: string[] | string;
}
export interface CfnTemplate {
  Resources: Record<string, CfnResource>;
  Outputs: Record<string, { Value: unknown; Description?: string }>;
}

export function buildExampleStack(config: FilestoreConfig = loadConfig(DEFAULT_CONFIG)): BuiltStack {
  const { app, stack, nag } = buildApp({ app: new App(), config });
  const template = Template.fromStack(stack);
  return { app, stack, config, template, json: template.toJSON() as CfnTemplate, nag };
}

/** The logical id of a construct's CloudFormation resource. */
export function logicalIdOf(stack: FilestoreStack, construct: { node: { defaultChild?: unknown } }): string {
  return stack.getLogicalId(construct.node.defaultChild as never);
}

export function dependsOn(r: CfnResource): string[] {
  return r.DependsOn === undefined ? [] : Array.isArray(r.DependsOn) ? r.DependsOn : [r.DependsOn];
}

/** Every IAM statement that applies to a role: its inline AWS::IAM::Policy documents. */
export function statementsOfRole(json: CfnTemplate, roleLogicalId: string): Array<{ Action: string | string[]; Resource: unknown; Effect: string; Condition?: unknown; Sid?: string }> {
  const out = [];
  for (const r of Object.values(json.Resources)) {
    if (r.Type !== 'AWS::IAM::Policy') continue;
    const roles = (r.Properties?.Roles ?? []) as Array<{ Ref?: string }>;
    if (!roles.some((x) => x.Ref === roleLogicalId)) continue;
    out.push(...(r.Properties?.PolicyDocument?.Statement ?? []));
  }
  return out;
}

export const actionsOf = (s: { Action: string | string[] }): string[] => (Array.isArray(s.Action) ? s.Action : [s.Action]);
export const resourcesOf = (s: { Resource: unknown }): unknown[] => (Array.isArray(s.Resource) ? s.Resource : [s.Resource]);
