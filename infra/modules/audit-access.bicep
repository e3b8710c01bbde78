// cmk-guard's rights on its own audit hub and function app (deployed into the app's resource
// group, after both exist):
//
// - always: Azure Event Hubs Data Receiver on the hub, so that OnKeyVaultAudit reads the
//   AuditEvent records with the managed identity (no connection string anywhere);
// - remediate mode with the eventsWiring consent only, the two destinations of self-wiring:
//   - listing the keys of the diagnostics authorization rule, on that rule only: creating a
//     diagnostic setting that streams to an event hub requires the caller to hold
//     `Microsoft.EventHub/namespaces/authorizationRules/listkeys/action` on the rule (Azure
//     Monitor, "Diagnostic settings", destination requirements);
//   - the OnKeyVaultEvent function as an event subscription's AzureFunction destination, on the
//     function app only: Event Grid checks that whoever subscribes a handler that is not a
//     WebHook has write access to it ("Permissions for event subscriptions", Event Grid
//     security-authorization) and reads the function to validate the destination.

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

@description('Name of the Event Hubs namespace of audit-hub.bicep.')
param namespaceName string

@description('Name of the audit hub.')
param hubName string

@description('Name of the diagnostics authorization rule.')
param ruleName string

@description('Name of the function app.')
param functionAppName string

@description('Grant the self-wiring destinations (remediate mode and remediations.eventsWiring).')
param grantWiring bool

@description('Label for the role names, unique per deployment (the azd environment name).')
param environmentName string

@description('Names (GUIDs) of the custom role definitions created here: {ruleKeys, functionSubscriber}.')
param roleDefinitionNames object

var eventHubsDataReceiverRoleId = 'a638d3c7-ab3a-418d-83e6-5f17a39d4fde'

// Exactly these actions (handler/tests/integration/infra/roles.rs checks both lists).
var ruleKeyActions = [
  'Microsoft.EventHub/namespaces/authorizationRules/listkeys/action'
]
var functionSubscriberActions = [
  'Microsoft.Web/sites/functions/read'
  'Microsoft.Web/sites/functions/write'
]

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' existing = {
  name: namespaceName
}

resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' existing = {
  parent: namespace
  name: hubName
}

resource rule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' existing = {
  parent: namespace
  name: ruleName
}

resource site 'Microsoft.Web/sites@2024-04-01' existing = {
  name: functionAppName
}

// The hub, not the namespace: the identity reads AuditEvent records and nothing else.
resource receiver 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hub.id, principalId, eventHubsDataReceiverRoleId)
  scope: hub
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', eventHubsDataReceiverRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource ruleKeys 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantWiring) {
  name: roleDefinitionNames.ruleKeys
  properties: {
    roleName: 'cmk-guard ${environmentName} audit rule keys (${subscription().subscriptionId})'
    description: 'List the keys of cmk-guard\'s diagnostics authorization rule, which a diagnostic setting streaming to it requires; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: ruleKeyActions
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

resource ruleKeysAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantWiring) {
  name: guid(rule.id, principalId, roleDefinitionNames.ruleKeys)
  scope: rule
  properties: {
    // The definition's own id here would be resource-group scoped; assignments need the
    // subscription-level id of the definition.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', ruleKeys.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource functionSubscriber 'Microsoft.Authorization/roleDefinitions@2022-04-01' = if (grantWiring) {
  name: roleDefinitionNames.functionSubscriber
  properties: {
    roleName: 'cmk-guard ${environmentName} function subscriber (${subscription().subscriptionId})'
    description: 'Name cmk-guard\'s own functions as Event Grid AzureFunction destinations; nothing else.'
    type: 'CustomRole'
    permissions: [
      {
        actions: functionSubscriberActions
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

resource functionSubscriberAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantWiring) {
  name: guid(site.id, principalId, roleDefinitionNames.functionSubscriber)
  scope: site
  properties: {
    // The definition's own id here would be resource-group scoped; assignments need the
    // subscription-level id of the definition.
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', functionSubscriber.name)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}
