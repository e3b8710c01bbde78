// One listed key vault (deployed into the vault's resource group): the rights the enabled
// remediations need on this vault only, and the vault's Event Grid system topic for
// OnKeyVaultEvent (Key Vault topics live in the vault's region; one per vault).

@description('Name of the vault.')
param vaultName string

@description('Region of the vault (its system topic must be in the same region).')
param location string

@description('Tags for created resources.')
param tags object

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

@description('Full id of the vault-writes custom role, or empty to grant none.')
param vaultWritesRoleDefinitionId string

@description('Full id of the key-access-grants custom role, or empty to grant none.')
param keyAccessGrantsRoleDefinitionId string

@description('Grant the data-plane rights for key rotation, rotation policy and key update.')
param rotation bool

@description('The vault uses Azure RBAC (true) or access policies (false) for the data plane.')
param rbac bool

@description('Name of an existing system topic of this vault, or empty to create one.')
param existingTopicName string

var cryptoOfficerRoleId = '14b46e9e-c2b7-41b4-b07b-48a6ebf60603'
var cryptoServiceEncryptionUserRoleId = 'e147488a-f6f5-4113-8e2d-b22465e65bf6'
var createdTopicName = 'cmk-guard-${vaultName}'

// Role assignment writes pass only for Key Vault Crypto Service Encryption User given to a
// service principal (the workspace identity), the one assignment cmk-guard ever makes.
var keyAccessCondition = '((!(ActionMatches{\'Microsoft.Authorization/roleAssignments/write\'})) OR (@Request[Microsoft.Authorization/roleAssignments:RoleDefinitionId] ForAnyOfAnyValues:GuidEquals {${cryptoServiceEncryptionUserRoleId}} AND @Request[Microsoft.Authorization/roleAssignments:PrincipalType] ForAnyOfAnyValues:StringEqualsIgnoreCase {\'ServicePrincipal\'}))'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource vaultWrites 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(vaultWritesRoleDefinitionId)) {
  name: guid(vault.id, principalId, 'vault-writes')
  scope: vault
  properties: {
    roleDefinitionId: vaultWritesRoleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource keyAccessGrants 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (!empty(keyAccessGrantsRoleDefinitionId)) {
  name: guid(vault.id, principalId, 'key-access-grants')
  scope: vault
  properties: {
    roleDefinitionId: keyAccessGrantsRoleDefinitionId
    principalId: principalId
    principalType: 'ServicePrincipal'
    condition: keyAccessCondition
    conditionVersion: '2.0'
  }
}

// key.expiry, key.rotation-policy and key.enabled write on the data plane. RBAC vault: Key
// Vault Crypto Officer on this vault. Access-policy vault: an access policy with exactly the
// key operations those remediations call.
resource cryptoOfficer 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (rotation && rbac) {
  name: guid(vault.id, principalId, cryptoOfficerRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', cryptoOfficerRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource rotationAccessPolicy 'Microsoft.KeyVault/vaults/accessPolicies@2023-07-01' = if (rotation && !rbac) {
  parent: vault
  name: 'add'
  properties: {
    accessPolicies: [
      {
        tenantId: subscription().tenantId
        objectId: principalId
        permissions: {
          keys: [
            'get'
            'update'
            'rotate'
            'getrotationpolicy'
            'setrotationpolicy'
          ]
        }
      }
    ]
  }
}

resource created 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (empty(existingTopicName)) {
  name: createdTopicName
  location: location
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: vault.id
    topicType: 'Microsoft.KeyVault.vaults'
  }
}

resource found 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (!empty(existingTopicName)) {
  name: existingTopicName
}

output topicName string = empty(existingTopicName) ? createdTopicName : existingTopicName
output topicPrincipalId string = empty(existingTopicName) ? created.identity.principalId : found.identity.principalId
