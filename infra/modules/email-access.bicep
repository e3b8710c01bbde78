// Lets cmk-guard's identity send its alert emails through Azure Communication Services, on the
// Communication Services resource only (deployed into that resource's group). A custom role
// with exactly the actions of the ACS documentation's email-sending role ("Set up SMTP
// authentication", custom email role) instead of Contributor, which could change or delete the
// resource and everything else in its scope.

@description('Name of the Communication Services resource cmk-guard sends email through.')
param communicationServiceName string

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

@description('Label for the role name, unique per deployment (the azd environment name).')
param environmentName string

@description('Name (GUID) of the custom role definition created here.')
param roleDefinitionName string

// Exactly these actions (handler/tests/integration/infra/roles.rs checks the list).
var emailSendActions = [
  'Microsoft.Communication/CommunicationServices/Read'
  'Microsoft.Communication/CommunicationServices/Write'
  'Microsoft.Communication/EmailServices/write'
]

resource communicationService 'Microsoft.Communication/communicationServices@2023-04-01' existing = {
  name: communicationServiceName
}

resource emailSender 'Microsoft.Authorization/roleDefinitions@2022-04-01' = {
  name: roleDefinitionName
  properties: {
    roleName: 'cmk-guard ${environmentName} email sender (${communicationServiceName})'
    description: 'Send email through one Azure Communication Services resource; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: emailSendActions
        notActions: []
        dataActions: []
        notDataActions: []
      }
    ]
    assignableScopes: [
      resourceGroup().id
    ]
  }
}

// Assigned on the Communication Services resource, not its group.
resource emailSenderAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(communicationService.id, principalId, roleDefinitionName)
  scope: communicationService
  properties: {
    // The definition's own id here would be resource-group scoped; assignments need the
    // subscription-level id of the definition.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', emailSender.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
