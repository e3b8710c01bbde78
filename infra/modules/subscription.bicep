// One watched subscription: cmk-guard's read access, the custom roles of the remediations that
// write at subscription scope or on vaults, and the subscription's Event Grid system topic
// (created, or an existing one: Azure allows only one system topic per source).
targetScope = 'subscription'

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

@description('Region for a resource group created here for the topic.')
param location string

@description('Tags for created resources.')
param tags object

@description('Resource group of the system topic.')
param topicResourceGroup string

@description('Create topicResourceGroup (false when it is the app\'s own group or already exists).')
param createTopicResourceGroup bool

@description('Name of an existing Microsoft.Resources.Subscriptions system topic to use, or empty to create one.')
param existingTopicName string

@description('Name of the custom role definitions created here, keyed by role (GUIDs).')
param roleDefinitionNames object

@description('Label for the role names, unique per deployment (the azd environment name).')
param environmentName string

@description('The ARM actions cmk-guard may take at subscription scope (empty: none, no role).')
param subscriptionActions array

@description('The ARM actions cmk-guard may take on the listed vaults (empty: no role).')
param vaultActions array

@description('Whether cmk-guard may assign Key Vault Crypto Service Encryption User on listed vaults.')
param grantKeyAccess bool

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'

// Reads through ARM only (workspaces, endpoints, vaults, keys, role assignments, providers,
// Resource Graph): Reader on the subscription is enough.
resource reader 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, readerRoleId)
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', readerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// key.expiry (a workspace pinning a key version is PATCHed to the new version) and
// subscription.providers (register one of the five providers): only where enabled.
resource subscriptionWrites 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(subscriptionActions)) {
  name: roleDefinitionNames.subscriptionWrites
  properties: {
    roleName: 'cmk-guard ${environmentName} subscription writes (${subscription().subscriptionId})'
    description: 'The ARM writes cmk-guard remediations make at subscription scope, nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: subscriptionActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource subscriptionWritesAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(subscriptionActions)) {
  name: guid(subscription().id, principalId, roleDefinitionNames.subscriptionWrites)
  properties: {
    roleDefinitionId: subscriptionWrites.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// vault.purge-protection (vault PATCH) and workspace.key-access on access-policy vaults
// (accessPolicies/add): defined here, assigned on each listed vault by vault.bicep.
resource vaultWrites 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(vaultActions)) {
  name: roleDefinitionNames.vaultWrites
  properties: {
    roleName: 'cmk-guard ${environmentName} vault writes (${subscription().subscriptionId})'
    description: 'The Key Vault ARM writes cmk-guard remediations make, nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: vaultActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

// workspace.key-access on RBAC vaults: a role assignment PUT. The role has write only (no
// delete), and vault.bicep assigns it with a condition that allows nothing but Key Vault Crypto
// Service Encryption User for service principals.
resource keyAccessGrants 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantKeyAccess) {
  name: roleDefinitionNames.keyAccessGrants
  properties: {
    roleName: 'cmk-guard ${environmentName} key access grants (${subscription().subscriptionId})'
    description: 'Create role assignments; assigned only with a condition limiting them to Key Vault Crypto Service Encryption User.'
    type: 'CustomRole'
    permissions: [
      {
        actions: [
          'Microsoft.Authorization/roleAssignments/write'
        ]
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource topicGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = if (createTopicResourceGroup) {
  name: topicResourceGroup
  location: location
  tags: tags
}

module topic 'subscription-topic.bicep' = {
  name: take('cmkguard-topic-${environmentName}', 64)
  scope: resourceGroup(topicResourceGroup)
  dependsOn: [
    topicGroup
  ]
  params: {
    existingTopicName: existingTopicName
    tags: tags
  }
}

output topicName string = topic.outputs.name
output topicResourceGroup string = topicResourceGroup
output topicPrincipalId string = topic.outputs.principalId
