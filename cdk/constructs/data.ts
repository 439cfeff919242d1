import { Duration, RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as elasticache from 'aws-cdk-lib/aws-elasticache';
import * as rds from 'aws-cdk-lib/aws-rds';
import * as secretsmanager from 'aws-cdk-lib/aws-secretsmanager';
import { Construct } from 'constructs';
import type { FilestoreConfig } from '../config.ts';
import type { Network } from './network.ts';

/** The database user of every connection through the proxy (IAM auth), the Lambdas' and on-prem agents': the schema owner. */
export const DATABASE_USER = 'filestore';
export const DATABASE_NAME = 'filestore';
export const DATABASE_PORT = 5432;
export const REDIS_PORT = 6379;

/**
 * PostgreSQL and Redis (SPEC §11 data).
 *
 * PostgreSQL: RDS Multi-AZ, encrypted, deletion protection, TLS forced (rds.force_ssl), the
 * master credentials generated into Secrets Manager and rotated (single user); RDS Proxy in
 * front with IAM authentication and TLS required. The Lambdas connect through the proxy as
 * DATABASE_USER (the master user, the schema owner: the migrate function creates the schema
 * with it), each granted `rds-db:connect` for that user on the proxy. On-prem agents connect
 * through the proxy the same way (FILESTORE_DB_* with IAM auth, their identity granted by the
 * agent policy, agents.ts): `onPremCidr` reaches the proxy's port, never the instance, and no
 * password leaves Secrets Manager (only the proxy and the rotation function read it).
 *
 * Redis: an ElastiCache Valkey replication group, cluster mode off (BullMQ's multi-key
 * scripts), Multi-AZ with automatic failover, encrypted at rest and in transit, AUTH token
 * generated into Secrets Manager, `maxmemory-policy noeviction` (BullMQ needs it).
 */
export class Data extends Construct {
  readonly database: rds.DatabaseInstance;
  readonly databaseSecret: secretsmanager.ISecret;
  readonly proxy: rds.DatabaseProxy;
  readonly databaseSecurityGroup: ec2.SecurityGroup;
  readonly proxySecurityGroup: ec2.SecurityGroup;
  readonly redis: elasticache.CfnReplicationGroup;
  readonly redisAuthSecret: secretsmanager.Secret;
  readonly redisSecurityGroup: ec2.SecurityGroup;

  constructor(scope: Construct, id: string, network: Network, config: FilestoreConfig) {
    super(scope, id);
    const { vpc } = network;

    this.databaseSecurityGroup = new ec2.SecurityGroup(this, 'DatabaseSecurityGroup', { vpc, description: 'Filestore PostgreSQL: from the proxy and the rotation function', allowAllOutbound: false });
    this.proxySecurityGroup = new ec2.SecurityGroup(this, 'ProxySecurityGroup', { vpc, description: 'Filestore RDS Proxy: from the Lambdas and on-prem agents', allowAllOutbound: false });
    this.proxySecurityGroup.addEgressRule(this.databaseSecurityGroup, ec2.Port.tcp(DATABASE_PORT), 'to PostgreSQL');
    this.databaseSecurityGroup.addIngressRule(this.proxySecurityGroup, ec2.Port.tcp(DATABASE_PORT), 'from RDS Proxy');
    this.proxySecurityGroup.addIngressRule(network.lambdaSecurityGroup, ec2.Port.tcp(DATABASE_PORT), 'from the Filestore Lambdas');

    const parameters = new rds.ParameterGroup(this, 'Parameters', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16 }),
      description: 'Filestore PostgreSQL: TLS required',
      parameters: { 'rds.force_ssl': '1' },
    });
    this.database = new rds.DatabaseInstance(this, 'Database', {
      engine: rds.DatabaseInstanceEngine.postgres({ version: rds.PostgresEngineVersion.VER_16 }),
      instanceType: new ec2.InstanceType(config.database.instanceType),
      vpc,
      vpcSubnets: network.dataSubnets,
      securityGroups: [this.databaseSecurityGroup],
      multiAz: true,
      storageEncrypted: true,
      storageType: rds.StorageType.GP3,
      allocatedStorage: config.database.allocatedStorageGiB,
      maxAllocatedStorage: config.database.maxAllocatedStorageGiB,
      deletionProtection: true,
      removalPolicy: RemovalPolicy.SNAPSHOT,
      backupRetention: Duration.days(config.database.backupRetentionDays),
      databaseName: DATABASE_NAME,
      port: DATABASE_PORT,
      credentials: rds.Credentials.fromGeneratedSecret(DATABASE_USER, { excludeCharacters: ` %+~\`#$&*()|[]{}:;<>?!'/@"\\,=^` }),
      parameterGroup: parameters,
      iamAuthentication: false,
      autoMinorVersionUpgrade: true,
      enablePerformanceInsights: true,
      cloudwatchLogsExports: ['postgresql', 'upgrade'],
      cloudwatchLogsRetention: config.logRetentionDays,
      publiclyAccessible: false,
    });
    this.databaseSecret = this.database.secret as secretsmanager.ISecret;
    this.database.addRotationSingleUser({
      automaticallyAfter: Duration.days(config.database.rotationDays),
      endpoint: network.secretsManagerEndpoint,
      vpcSubnets: network.appSubnets,
      excludeCharacters: ` %+~\`#$&*()|[]{}:;<>?!'/@"\\,=^`,
    });

    this.proxy = this.database.addProxy('Proxy', {
      secrets: [this.databaseSecret],
      vpc,
      vpcSubnets: network.dataSubnets,
      securityGroups: [this.proxySecurityGroup],
      iamAuth: true,
      requireTLS: true,
      borrowTimeout: Duration.seconds(30),
      idleClientTimeout: Duration.minutes(30),
      maxConnectionsPercent: 90,
      debugLogging: false,
    });

    // Redis (Valkey).
    this.redisSecurityGroup = new ec2.SecurityGroup(this, 'RedisSecurityGroup', { vpc, description: 'Filestore Redis: from the Lambdas and on-prem agents', allowAllOutbound: false });
    this.redisSecurityGroup.addIngressRule(network.lambdaSecurityGroup, ec2.Port.tcp(REDIS_PORT), 'from the Filestore Lambdas');
    if (config.onPremCidr) {
      this.redisSecurityGroup.addIngressRule(ec2.Peer.ipv4(config.onPremCidr), ec2.Port.tcp(REDIS_PORT), 'from on-prem agents (VPN / Direct Connect)');
      // Agents connect through the proxy with IAM auth; the instance admits nothing from on-prem.
      this.proxySecurityGroup.addIngressRule(ec2.Peer.ipv4(config.onPremCidr), ec2.Port.tcp(DATABASE_PORT), 'from on-prem agents, IAM auth (VPN / Direct Connect)');
    }
    // ElastiCache refuses punctuation in an AUTH token beyond a few characters: letters and digits only.
    this.redisAuthSecret = new secretsmanager.Secret(this, 'RedisAuthToken', {
      description: 'Filestore: the Redis (ElastiCache) AUTH token',
      generateSecretString: { passwordLength: 64, excludePunctuation: true, includeSpace: false },
    });
    const subnets = new elasticache.CfnSubnetGroup(this, 'RedisSubnets', {
      description: 'Filestore Redis subnets',
      subnetIds: vpc.selectSubnets(network.dataSubnets).subnetIds,
    });
    const redisParameters = new elasticache.CfnParameterGroup(this, 'RedisParameters', {
      cacheParameterGroupFamily: 'valkey8',
      description: 'Filestore: noeviction (BullMQ keeps its queues in Redis)',
      properties: { 'maxmemory-policy': 'noeviction' },
    });
    this.redis = new elasticache.CfnReplicationGroup(this, 'Redis', {
      replicationGroupDescription: 'Filestore events, cache and agent queues',
      engine: 'valkey',
      engineVersion: '8.0',
      cacheNodeType: config.redis.nodeType,
      numCacheClusters: config.redis.nodes,
      automaticFailoverEnabled: true,
      multiAzEnabled: true,
      clusterMode: 'disabled',
      port: REDIS_PORT,
      cacheParameterGroupName: redisParameters.ref,
      cacheSubnetGroupName: subnets.ref,
      securityGroupIds: [this.redisSecurityGroup.securityGroupId],
      atRestEncryptionEnabled: true,
      transitEncryptionEnabled: true,
      transitEncryptionMode: 'required',
      authToken: this.redisAuthSecret.secretValue.unsafeUnwrap(),
      snapshotRetentionLimit: 1,
      autoMinorVersionUpgrade: true,
    });
  }

  /** rediss://<primary endpoint>:<port> (the AUTH token is added by the Lambdas from the secret). */
  get redisUrl(): string {
    return `rediss://${this.redis.attrPrimaryEndPointAddress}:${this.redis.attrPrimaryEndPointPort}`;
  }
}
