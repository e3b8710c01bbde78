// cmk-guard: everything `azd provision` deploys. The subscriptions' Event Grid event
// subscriptions are not here: an AzureFunction destination needs the function to exist, so
// events.bicep adds them after the code is deployed (azure.yaml postdeploy hook,
// infra/hooks/postdeploy.sh). Key vaults are not listed anywhere: the sweep finds the CMK
// vaults and wires each one (system topic, event subscription, AuditEvent diagnostic setting)
// in remediate mode with the eventsWiring consent, or reports `vault.events-wired` otherwise.
targetScope = 'subscription'

@minLength(1)
@maxLength(40)
@description('azd environment name; names the resource group and labels the custom roles.')
param environmentName string

@minLength(1)
@description('Region of the function app and its resources (a region that offers Flex Consumption).')
param location string

@allowed([
  'observe'
  'alert'
  'remediate'
])
@description('CMKGUARD_MODE. Remediation rights are granted only with remediate.')
param mode string = 'alert'

@description('Watched subscriptions: [{id, topicResourceGroup?, createTopicResourceGroup?, existingTopicName?}]. Default: this subscription.')
param subscriptions array = [
  {
    id: subscription().subscriptionId
  }
]

@description('Management group ids (names) whose subscriptions cmk-guard discovers at each sweep (CMKGUARD_MANAGEMENT_GROUPS). Their subscriptions still need `subscriptions` entries for events and rights: docs/deploy.md.')
param managementGroups array = []

@description('Service-provisioned resource groups whose names lack the azureml-rg- prefix (the sweep logs them: `Service-provisioned resource groups watched.`, field `without_prefix`). Each gets an Event Grid event subscription on every watched subscription\'s topic (events.bicep, postdeploy hook). ARM resource-group names: 1-90 letters, digits, underscores, hyphens, periods and parentheses, not ending in a period. docs/deploy.md.')
param managedResourceGroups array = []

@description('Rights for the remediations the policy file enables and for self-wiring (remediate mode only): {purgeProtection, keyAccessPolicy, keyAccessRbac, keyExpiry, keyRotation, providers, eventsWiring}, each false by default.')
param remediations object = {}

@minValue(1)
@maxValue(32)
@description('Partitions of the audit hub (AuditEvent records); fixed once created.')
param auditPartitionCount int = 2

@description('Local path of the policy file the package carries as policy.toml (azd env CMK_GUARD_POLICY), or empty for the built-in policy.')
param policySource string = ''

@description('NCRONTAB schedule of the Sweep function.')
param sweepSchedule string = '0 0 */6 * * *'

@description('Log filter of cmk-guard (info, debug, cmk_guard=debug).')
param logLevel string = 'info'

@secure()
@description('Teams Workflows webhook URL (prefer teamsWebhookSecretUri).')
param teamsWebhookUrl string = ''

@description('Key Vault secret URI of the Teams webhook URL; the app reads it through a Key Vault reference.')
param teamsWebhookSecretUri string = ''

@secure()
@description('Generic JSON webhook URL (prefer webhookSecretUri).')
param webhookUrl string = ''

@description('Key Vault secret URI of the generic webhook URL.')
param webhookSecretUri string = ''

@description('ARM id of the RBAC vault holding the alert secrets; cmk-guard gets Key Vault Secrets User on it. Empty: grant it yourself.')
param alertSecretsVaultId string = ''

@description('Email recipients, comma-separated.')
param emailTo string = ''

@description('Email sender address.')
param emailFrom string = ''

@description('Azure Communication Services endpoint for email (managed identity).')
param acsEndpoint string = ''

@description('ARM id of the Communication Services resource of acsEndpoint; cmk-guard gets a custom email-sending role on that resource only. Empty: grant it yourself.')
param acsResourceId string = ''

@secure()
@description('smtp://user:pass@host:587 (prefer smtpUrlSecretUri).')
param smtpUrl string = ''

@description('Key Vault secret URI of the SMTP URL.')
param smtpUrlSecretUri string = ''

@minValue(1)
@maxValue(1000)
@description('Maximum number of Flex Consumption instances. Every instance shares one identity\'s ARM budget, so more do not sweep faster: docs/deploy.md, *Instances and memory*.')
param maximumInstanceCount int = 10

@allowed([
  512
  2048
  4096
])
@description('Memory of one instance in MB; cmk-guard needs well under 512.')
param instanceMemoryMB int = 512

@description('Days after which audit records are deleted from the state container; 0 keeps them.')
param auditRetentionDays int = 90

@description('Days after which dead-lettered events are deleted; 0 keeps them.')
param deadLetterRetentionDays int = 30

@minValue(5)
@description('Azure Monitor alert: a critical finding open longer than this many minutes (docs/deploy.md, Azure Monitor).')
param criticalOpenMinutes int = 60

@description('Azure Monitor alerts email these: [{name, address}] (the action group).')
param alertEmails array = []

var tags = {
  'azd-env-name': environmentName
}
var resourceGroupName = 'rg-${environmentName}'
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var remediate = mode == 'remediate'
var consent = union({
  purgeProtection: false
  keyAccessPolicy: false
  keyAccessRbac: false
  keyExpiry: false
  keyRotation: false
  providers: false
  eventsWiring: false
}, remediations)

// The writes of handler/src/remediate/, each only when its remediation is enabled.
var subscriptionActions = concat(remediate && consent.keyExpiry ? [
  'Microsoft.MachineLearningServices/workspaces/write'
] : [], remediate && consent.providers ? [
  'Microsoft.MachineLearningServices/register/action'
  'Microsoft.Storage/register/action'
  'Microsoft.KeyVault/register/action'
  'Microsoft.DocumentDB/register/action'
  'Microsoft.Search/register/action'
] : [])
var vaultActions = concat(remediate && consent.purgeProtection ? [
  'Microsoft.KeyVault/vaults/write'
] : [], remediate && consent.keyAccessPolicy ? [
  'Microsoft.KeyVault/vaults/accessPolicies/write'
] : [])
var grantKeyAccess = remediate && consent.keyAccessRbac
var grantKeyRotation = remediate && consent.keyRotation
var grantWiring = remediate && consent.eventsWiring

// Self-wiring's writes at subscription scope, and the reads that go with them (Reader has the
// reads too; they are listed so that the role stands on its own). Creating an event
// subscription on a system topic is also checked as Microsoft.EventGrid/eventSubscriptions/write
// on the source (the vault): Event Grid, "Permissions for event subscriptions". Exactly this
// list: handler/tests/integration/infra/roles.rs.
var selfWiringActions = [
  'Microsoft.EventGrid/systemTopics/read'
  'Microsoft.EventGrid/systemTopics/write'
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/read'
  'Microsoft.EventGrid/systemTopics/eventSubscriptions/write'
  'Microsoft.EventGrid/eventSubscriptions/write'
  'Microsoft.Insights/diagnosticSettings/read'
  'Microsoft.Insights/diagnosticSettings/write'
]

// The audit hub (modules/audit-hub.bicep). The consumer group is the one
// function-definitions/OnKeyVaultAudit/function.json reads.
var audit = {
  namespaceName: 'evhns-cmkguard-${resourceToken}'
  hubName: 'kv-audit'
  consumerGroupName: 'cmk-guard'
  ruleName: 'cmk-guard-diagnostics'
}

var watched = [for s in subscriptions: union({
  topicResourceGroup: resourceGroupName
  createTopicResourceGroup: true
  existingTopicName: ''
}, s)]
var subscriptionIds = [for s in subscriptions: s.id]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
}

module auditHub 'modules/audit-hub.bicep' = {
  name: 'cmkguard-audit-hub'
  scope: rg
  params: {
    location: location
    tags: tags
    namespaceName: audit.namespaceName
    hubName: audit.hubName
    consumerGroupName: audit.consumerGroupName
    ruleName: audit.ruleName
    partitionCount: auditPartitionCount
  }
}

module monitor 'modules/monitor.bicep' = {
  name: 'cmkguard-monitor'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    criticalOpenMinutes: criticalOpenMinutes
    alertEmails: alertEmails
  }
}

module app 'modules/app.bicep' = {
  name: 'cmkguard-app'
  scope: rg
  params: {
    location: location
    tags: tags
    resourceToken: resourceToken
    serviceName: 'cmk-guard'
    mode: mode
    subscriptionIds: subscriptionIds
    managementGroups: managementGroups
    auditEventHubNamespace: auditHub.outputs.fullyQualifiedNamespace
    auditEventHubName: auditHub.outputs.hubName
    auditEventHubRuleId: auditHub.outputs.ruleId
    policyFile: empty(policySource) ? '' : 'policy.toml'
    sweepSchedule: sweepSchedule
    logLevel: logLevel
    teamsWebhookUrl: teamsWebhookUrl
    teamsWebhookSecretUri: teamsWebhookSecretUri
    webhookUrl: webhookUrl
    webhookSecretUri: webhookSecretUri
    emailTo: emailTo
    emailFrom: emailFrom
    acsEndpoint: acsEndpoint
    smtpUrl: smtpUrl
    smtpUrlSecretUri: smtpUrlSecretUri
    maximumInstanceCount: maximumInstanceCount
    instanceMemoryMB: instanceMemoryMB
    auditRetentionDays: auditRetentionDays
    deadLetterRetentionDays: deadLetterRetentionDays
    logsWorkspaceId: monitor.outputs.workspaceId
    logsIngestionEndpoint: monitor.outputs.ingestionEndpoint
    logsRuleId: monitor.outputs.ruleImmutableId
    logsStream: monitor.outputs.streamName
  }
}

module monitorAccess 'modules/monitor-access.bicep' = {
  name: take('cmkguard-${environmentName}-monitor-access', 64)
  scope: rg
  params: {
    ruleName: monitor.outputs.ruleName
    principalId: app.outputs.identityPrincipalId
    dataStorageName: app.outputs.dataStorageName
    workspaceId: monitor.outputs.workspaceId
  }
}

module watch 'modules/subscription.bicep' = [for (s, i) in watched: {
  name: take('cmkguard-${environmentName}-subscription-${i}', 64)
  scope: subscription(s.id)
  dependsOn: [
    rg
  ]
  params: {
    principalId: app.outputs.identityPrincipalId
    location: location
    tags: tags
    topicResourceGroup: s.topicResourceGroup
    createTopicResourceGroup: s.createTopicResourceGroup && empty(s.existingTopicName) && !(s.id == subscription().subscriptionId && s.topicResourceGroup == resourceGroupName)
    existingTopicName: s.existingTopicName
    environmentName: environmentName
    roleDefinitionNames: {
      subscriptionWrites: guid('cmk-guard', environmentName, s.id, 'subscription-writes')
      vaultWrites: guid('cmk-guard', environmentName, s.id, 'vault-writes')
      keyAccessGrants: guid('cmk-guard', environmentName, s.id, 'key-access-grants')
      keyRotation: guid('cmk-guard', environmentName, s.id, 'key-rotation')
      selfWiring: guid('cmk-guard', environmentName, s.id, 'self-wiring')
    }
    subscriptionActions: subscriptionActions
    vaultActions: vaultActions
    grantKeyAccess: grantKeyAccess
    grantKeyRotation: grantKeyRotation
    wiringActions: grantWiring ? selfWiringActions : []
  }
}]

module auditAccess 'modules/audit-access.bicep' = {
  name: take('cmkguard-${environmentName}-audit-access', 64)
  scope: rg
  params: {
    principalId: app.outputs.identityPrincipalId
    namespaceName: auditHub.outputs.namespaceName
    hubName: auditHub.outputs.hubName
    ruleName: audit.ruleName
    functionAppName: app.outputs.functionAppName
    grantWiring: grantWiring
    environmentName: environmentName
    roleDefinitionNames: {
      ruleKeys: guid('cmk-guard', environmentName, subscription().subscriptionId, 'audit-rule-keys')
      functionSubscriber: guid('cmk-guard', environmentName, subscription().subscriptionId, 'function-subscriber')
    }
  }
}

module alertSecrets 'modules/secrets-access.bicep' = if (!empty(alertSecretsVaultId)) {
  name: take('cmkguard-${environmentName}-alert-secrets', 64)
  scope: resourceGroup(split(alertSecretsVaultId, '/')[2], split(alertSecretsVaultId, '/')[4])
  params: {
    vaultName: last(split(alertSecretsVaultId, '/'))
    principalId: app.outputs.identityPrincipalId
  }
}

module emailAccess 'modules/email-access.bicep' = if (!empty(acsResourceId)) {
  name: take('cmkguard-${environmentName}-email-access', 64)
  scope: resourceGroup(split(acsResourceId, '/')[2], split(acsResourceId, '/')[4])
  params: {
    communicationServiceName: last(split(acsResourceId, '/'))
    principalId: app.outputs.identityPrincipalId
    environmentName: environmentName
    roleDefinitionName: guid('cmk-guard', environmentName, acsResourceId, 'email-sender')
  }
}

module subscriptionDeadLetters 'modules/deadletter-access.bicep' = [for (s, i) in watched: {
  name: take('cmkguard-${environmentName}-deadletter-sub-${i}', 64)
  scope: rg
  params: {
    storageAccountName: app.outputs.dataStorageName
    containerName: app.outputs.deadLetterContainerName
    principalId: watch[i].outputs.topicPrincipalId
  }
}]

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output CMK_GUARD_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output CMK_GUARD_STATE_URL string = app.outputs.stateContainerUrl
output CMK_GUARD_AUDIT_EVENTHUB_RULE_ID string = auditHub.outputs.ruleId

// What events.bicep needs, read by infra/hooks/postdeploy.sh from the azd environment.
output CMK_GUARD_FUNCTION_APP_ID string = app.outputs.functionAppId
output CMK_GUARD_DEAD_LETTER_STORAGE_ID string = app.outputs.dataStorageId
output CMK_GUARD_DEAD_LETTER_CONTAINER string = app.outputs.deadLetterContainerName
output CMK_GUARD_MANAGED_RESOURCE_GROUPS array = managedResourceGroups
output CMK_GUARD_SUBSCRIPTION_TOPICS array = [for (s, i) in watched: {
  subscriptionId: s.id
  resourceGroup: watch[i].outputs.topicResourceGroup
  name: watch[i].outputs.topicName
}]
