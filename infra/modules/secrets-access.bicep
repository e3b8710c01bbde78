// Lets cmk-guard's identity resolve the Key Vault references of its alert settings (Teams,
// webhook, SMTP URLs): Key Vault Secrets User on the vault that holds them. That role reads
// every secret in the vault, so keep these secrets in a vault of their own (RBAC mode).

@description('Name of the vault holding the alert secrets.')
param vaultName string

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

var secretsUserRoleId = '4633458b-17de-408a-b874-0445c86b69e6'

resource vault 'Microsoft.KeyVault/vaults@2023-07-01' existing = {
  name: vaultName
}

resource secretsUser 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(vault.id, principalId, secretsUserRoleId)
  scope: vault
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', secretsUserRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
