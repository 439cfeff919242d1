import { RemovalPolicy } from 'aws-cdk-lib';
import * as ec2 from 'aws-cdk-lib/aws-ec2';
import * as logs from 'aws-cdk-lib/aws-logs';
import { Construct } from 'constructs';
import type { FilestoreConfig } from '../config.ts';

/**
 * The VPC (SPEC §11 network): explicit AZs (no lookups), isolated subnets only — no internet
 * gateway, no NAT: the Lambdas reach S3 through the gateway endpoint, SQS and Secrets Manager
 * through interface endpoints (X-Ray segments leave through the Lambda runtime's daemon, logs
 * and EMF metrics through stdout: neither needs the VPC), on-prem agents through VPN / Direct
 * Connect attached by the operator. Rejected traffic is flow-logged to CloudWatch Logs.
 */
export class Network extends Construct {
  readonly vpc: ec2.Vpc;
  /** The Lambdas' security group: the database proxy and Redis admit it. */
  readonly lambdaSecurityGroup: ec2.SecurityGroup;
  readonly appSubnets: ec2.SubnetSelection = { subnetGroupName: 'app' };
  readonly dataSubnets: ec2.SubnetSelection = { subnetGroupName: 'data' };
  readonly secretsManagerEndpoint: ec2.InterfaceVpcEndpoint;

  constructor(scope: Construct, id: string, config: FilestoreConfig) {
    super(scope, id);
    this.vpc = new ec2.Vpc(this, 'Vpc', {
      ipAddresses: ec2.IpAddresses.cidr(config.vpcCidr),
      availabilityZones: config.availabilityZones,
      natGateways: 0,
      subnetConfiguration: [
        { name: 'app', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 20 },
        { name: 'data', subnetType: ec2.SubnetType.PRIVATE_ISOLATED, cidrMask: 24 },
      ],
      restrictDefaultSecurityGroup: false,
      gatewayEndpoints: { S3: { service: ec2.GatewayVpcEndpointAwsService.S3, subnets: [this.appSubnets] } },
    });
    const flowLogs = new logs.LogGroup(this, 'FlowLogs', { retention: config.logRetentionDays, removalPolicy: RemovalPolicy.RETAIN });
    this.vpc.addFlowLog('FlowLog', { destination: ec2.FlowLogDestination.toCloudWatchLogs(flowLogs), trafficType: ec2.FlowLogTrafficType.REJECT });

    this.lambdaSecurityGroup = new ec2.SecurityGroup(this, 'LambdaSecurityGroup', {
      vpc: this.vpc,
      description: 'Filestore Lambdas: out to the database proxy, Redis and the VPC endpoints',
      allowAllOutbound: true,
    });
    const endpointSecurityGroup = new ec2.SecurityGroup(this, 'EndpointSecurityGroup', {
      vpc: this.vpc,
      description: 'Filestore interface endpoints: HTTPS from the VPC',
      allowAllOutbound: false,
    });
    endpointSecurityGroup.addIngressRule(ec2.Peer.ipv4(config.vpcCidr), ec2.Port.tcp(443), 'HTTPS from inside the VPC (Lambdas, secret rotation)');
    const endpoint = (name: string, service: ec2.InterfaceVpcEndpointAwsService) =>
      this.vpc.addInterfaceEndpoint(name, { service, subnets: this.appSubnets, securityGroups: [endpointSecurityGroup], privateDnsEnabled: true, open: false });
    this.secretsManagerEndpoint = endpoint('SecretsManager', ec2.InterfaceVpcEndpointAwsService.SECRETS_MANAGER);
    endpoint('Sqs', ec2.InterfaceVpcEndpointAwsService.SQS);
  }
}
