// One watched subscription: cmk-guard's read access, the custom roles of the remediations and
// of self-wiring (all assigned at this subscription: there is no list of vaults, cmk-guard finds
// the CMK vaults itself), and the subscription's Event Grid system topic (created, or an
// existing one: Azure allows only one system topic per source).
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

@description('The ARM actions cmk-guard may take on the vaults of this subscription (empty: no role).')
param vaultActions array

@description('Whether cmk-guard may assign Key Vault Crypto Service Encryption User in this subscription.')
param grantKeyAccess bool

@description('Whether cmk-guard may rotate keys and set their rotation policy and attributes in this subscription\'s RBAC vaults.')
param grantKeyRotation bool

@description('The ARM actions of self-wiring: a vault\'s system topic, its event subscription and its diagnostic setting (empty: no role).')
param wiringActions array

var readerRoleId = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var cryptoServiceEncryptionUserRoleId = 'e147488a-f6f5-4113-8e2d-b22465e65bf6'

// key.expiry, key.rotation-policy and key.enabled on RBAC vaults: exactly the data-plane
// operations those remediations call (the access-policy permissions get, update, rotate,
// setrotationpolicy), instead of Key Vault Crypto Officer, which could also create, delete and
// purge keys. No rotation-policy read: cmk-guard reads the policy through ARM (Reader).
// handler/tests/integration/infra/roles.rs checks the list, and
// tests/tests/blackbox/least_privilege.rs that a remediating sweep uses each action.
var keyRotationDataActions = [
  'Microsoft.KeyVault/vaults/keys/read'
  'Microsoft.KeyVault/vaults/keys/update/action'
  'Microsoft.KeyVault/vaults/keys/rotate/action'
  'Microsoft.KeyVault/vaults/keyrotationpolicies/write'
]

// Role assignment writes pass only for Key Vault Crypto Service Encryption User given to a
// service principal (the workspace identity), the one assignment cmk-guard ever makes.
var keyAccessCondition = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${cryptoServiceEncryptionUserRoleId}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {\'ServicePrincipal\'}))'

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
// (accessPolicies/add), on any vault of this subscription.
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
// delete), and is assigned with a condition that allows nothing but Key Vault Crypto Service
// Encryption User for service principals.
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

resource vaultWritesAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(vaultActions)) {
  name: guid(subscription().id, principalId, roleDefinitionNames.vaultWrites)
  properties: {
    roleDefinitionId: vaultWrites.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyAccessGrantsAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantKeyAccess) {
  name: guid(subscription().id, principalId, roleDefinitionNames.keyAccessGrants)
  properties: {
    roleDefinitionId: keyAccessGrants.id
    principalId: principalId
    principalType: 'ServicePrincipal'
    condition: keyAccessCondition
    conditionVersion: '2.0'
  }
}

resource keyRotation 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantKeyRotation) {
  name: roleDefinitionNames.keyRotation
  properties: {
    roleName: 'cmk-guard ${environmentName} key rotation (${subscription().subscriptionId})'
    description: 'Read, update and rotate keys and read and set their rotation policy (data plane, RBAC vaults); nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: []
        notActions: []
        dataActions: keyRotationDataActions
        notDataActions: []
      }
    ]
    assignableScopes: [
      subscription().id
    ]
  }
}

resource keyRotationAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantKeyRotation) {
  name: guid(subscription().id, principalId, roleDefinitionNames.keyRotation)
  properties: {
    roleDefinitionId: keyRotation.id
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

// vault.events-wired in remediate mode: the sweep creates (or reuses) a CMK vault's Event Grid
// system topic, subscribes OnKeyVaultEvent to it and adds the diagnostic setting
// `cmk-guard-audit`. Exactly the writes (and their reads) that takes; the destinations' rights
// (the function, the Event Hub rule) are granted in the app's resource group, audit-access.bicep.
resource selfWiring 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (!empty(wiringActions)) {
  name: roleDefinitionNames.selfWiring
  properties: {
    roleName: 'cmk-guard ${environmentName} self-wiring (${subscription().subscriptionId})'
    description: 'Create a Key Vault system topic, its event subscription to cmk-guard and its diagnostic setting to cmk-guard\'s Event Hub; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: wiringActions
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

resource selfWiringAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(wiringActions)) {
  name: guid(subscription().id, principalId, roleDefinitionNames.selfWiring)
  properties: {
    roleDefinitionId: selfWiring.id
    principalId: principalId
    principalType: 'ServicePrincipal'
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
