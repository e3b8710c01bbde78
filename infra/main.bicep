// cmk-guard: everything `azd provision` deploys. The Event Grid event subscriptions are not
// here: an AzureFunction destination needs the function to exist, so events.bicep adds them
// after the code is deployed (azure.yaml postdeploy hook, infra/hooks/postdeploy.sh).
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

@description('CMK key vaults: [{id, rotation?, rbac?, existingTopicName?}]. Each gets Key Vault events and, in remediate mode, the vault rights below.')
param keyVaults array = []

@description('Rights for the remediations the policy file enables (remediate mode only): {purgeProtection, keyAccessPolicy, keyAccessRbac, keyExpiry, providers}, each false by default.')
param remediations object = {}

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

@secure()
@description('smtp://user:pass@host:587 (prefer smtpUrlSecretUri).')
param smtpUrl string = ''

@description('Key Vault secret URI of the SMTP URL.')
param smtpUrlSecretUri string = ''

@minValue(1)
@maxValue(1000)
@description('Maximum number of Flex Consumption instances.')
param maximumInstanceCount int = 40

@allowed([
  512
  2048
  4096
])
@description('Memory of one instance in MB; cmk-guard needs well under 512.')
param instanceMemoryMB int = 2048

@description('Days after which audit records are deleted from the state container; 0 keeps them.')
param auditRetentionDays int = 90

@description('Days after which dead-lettered events are deleted; 0 keeps them.')
param deadLetterRetentionDays int = 30

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
  providers: false
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

var watched = [for s in subscriptions: union({
  topicResourceGroup: resourceGroupName
  createTopicResourceGroup: true
  existingTopicName: ''
}, s)]
var subscriptionIds = [for s in subscriptions: s.id]
var vaults = [for v in keyVaults: union({
  rotation: false
  rbac: true
  existingTopicName: ''
}, v, {
  subscriptionId: split(v.id, '/')[2]
  resourceGroup: split(v.id, '/')[4]
  name: last(split(v.id, '/'))
})]

resource rg 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: resourceGroupName
  location: location
  tags: tags
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
    }
    subscriptionActions: subscriptionActions
    vaultActions: vaultActions
    grantKeyAccess: grantKeyAccess
  }
}]

resource vaultsFound 'Microsoft.KeyVault/vaults@2023-07-01' existing = [for v in vaults: {
  name: v.name
  scope: resourceGroup(v.subscriptionId, v.resourceGroup)
}]

module vault 'modules/vault.bicep' = [for (v, i) in vaults: {
  name: take('cmkguard-${environmentName}-vault-${i}', 64)
  scope: resourceGroup(v.subscriptionId, v.resourceGroup)
  dependsOn: [
    watch
  ]
  params: {
    vaultName: v.name
    location: vaultsFound[i].location
    tags: tags
    principalId: app.outputs.identityPrincipalId
    vaultWritesRoleDefinitionId: empty(vaultActions) ? '' : subscriptionResourceId(v.subscriptionId, 'Microsoft.Authorization/roleDefinitions', guid('cmk-guard', environmentName, v.subscriptionId, 'vault-writes'))
    keyAccessGrantsRoleDefinitionId: grantKeyAccess ? subscriptionResourceId(v.subscriptionId, 'Microsoft.Authorization/roleDefinitions', guid('cmk-guard', environmentName, v.subscriptionId, 'key-access-grants')) : ''
    rotation: remediate && v.rotation
    rbac: v.rbac
    existingTopicName: v.existingTopicName
  }
}]

module alertSecrets 'modules/secrets-access.bicep' = if (!empty(alertSecretsVaultId)) {
  name: take('cmkguard-${environmentName}-alert-secrets', 64)
  scope: resourceGroup(split(alertSecretsVaultId, '/')[2], split(alertSecretsVaultId, '/')[4])
  params: {
    vaultName: last(split(alertSecretsVaultId, '/'))
    principalId: app.outputs.identityPrincipalId
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

module vaultDeadLetters 'modules/deadletter-access.bicep' = [for (v, i) in vaults: {
  name: take('cmkguard-${environmentName}-deadletter-vault-${i}', 64)
  scope: rg
  params: {
    storageAccountName: app.outputs.dataStorageName
    containerName: app.outputs.deadLetterContainerName
    principalId: vault[i].outputs.topicPrincipalId
  }
}]

output AZURE_LOCATION string = location
output AZURE_RESOURCE_GROUP string = rg.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output CMK_GUARD_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
output CMK_GUARD_STATE_URL string = app.outputs.stateContainerUrl

// What events.bicep needs, read by infra/hooks/postdeploy.sh from the azd environment.
output CMK_GUARD_FUNCTION_APP_ID string = app.outputs.functionAppId
output CMK_GUARD_DEAD_LETTER_STORAGE_ID string = app.outputs.dataStorageId
output CMK_GUARD_DEAD_LETTER_CONTAINER string = app.outputs.deadLetterContainerName
output CMK_GUARD_SUBSCRIPTION_TOPICS array = [for (s, i) in watched: {
  subscriptionId: s.id
  resourceGroup: watch[i].outputs.topicResourceGroup
  name: watch[i].outputs.topicName
}]
output CMK_GUARD_KEY_VAULT_TOPICS array = [for (v, i) in vaults: {
  subscriptionId: v.subscriptionId
  resourceGroup: v.resourceGroup
  name: vault[i].outputs.topicName
}]
