// Where Key Vault AuditEvent records arrive: an Event Hubs namespace with one hub and the
// consumer group OnKeyVaultAudit reads (function-definitions/OnKeyVaultAudit/function.json).
// cmk-guard's sweep points each CMK vault's diagnostic setting `cmk-guard-audit` here
// (self-wiring); Azure Monitor then streams the vault's AuditEvent category into the hub.
//
// Why the namespace keeps local (SAS) authentication: Azure Monitor diagnostic settings send
// to Event Hubs only through a namespace authorization rule, never with an identity. The
// function itself reads with its managed identity (Azure Event Hubs Data Receiver on the hub,
// audit-access.bicep); the one rule here exists for Azure Monitor alone.

@description('Region of the namespace. Azure Monitor streams a regional resource\'s logs only to a namespace in the same region.')
param location string

@description('Tags for every resource.')
param tags object

@description('Name of the namespace (globally unique).')
param namespaceName string

@description('Name of the hub the AuditEvent records go to (CMKGUARD_AUDIT_EVENTHUB_NAME).')
param hubName string

@description('Name of the consumer group OnKeyVaultAudit reads; function.json names it.')
param consumerGroupName string

@description('Name of the namespace authorization rule diagnostic settings send with (CMKGUARD_AUDIT_EVENTHUB_RULE_ID).')
param ruleName string

@minValue(1)
@maxValue(32)
@description('Partitions of the hub: how many instances read in parallel. Fixed once created on Standard.')
param partitionCount int = 2

resource namespace 'Microsoft.EventHub/namespaces@2024-01-01' = {
  name: namespaceName
  location: location
  tags: tags
  sku: {
    name: 'Standard'
    tier: 'Standard'
    capacity: 1
  }
  properties: {
    minimumTlsVersion: '1.2'
    // Required by Azure Monitor's diagnostic settings (see above).
    disableLocalAuth: false
    // Azure Monitor and the Flex Consumption app (no VNet integration) reach the namespace over
    // its public endpoint; every client authenticates (the rule's key, or an Entra token).
    publicNetworkAccess: 'Enabled'
    isAutoInflateEnabled: false
    kafkaEnabled: false
  }
}

// Azure Monitor's documentation asks for Manage, Send and Listen on the rule a diagnostic
// setting streams with ("Streaming to Event Hubs requires Manage, Send, and Listen
// permissions"). cmk-guard's identity may list this rule's keys only in remediate mode with the
// eventsWiring consent (audit-access.bicep), because creating such a setting requires it.
resource diagnosticsRule 'Microsoft.EventHub/namespaces/authorizationRules@2024-01-01' = {
  parent: namespace
  name: ruleName
  properties: {
    rights: [
      'Manage'
      'Listen'
      'Send'
    ]
  }
}

// AuditEvent records are acted on within minutes or not at all: one day of retention covers a
// stopped app or a failed deployment, and the sweep re-checks everything anyway.
resource hub 'Microsoft.EventHub/namespaces/eventhubs@2024-01-01' = {
  parent: namespace
  name: hubName
  properties: {
    partitionCount: partitionCount
    messageRetentionInDays: 1
  }
}

resource consumerGroup 'Microsoft.EventHub/namespaces/eventhubs/consumergroups@2024-01-01' = {
  parent: hub
  name: consumerGroupName
  properties: {
    userMetadata: 'cmk-guard OnKeyVaultAudit'
  }
}

output namespaceName string = namespace.name
// <namespace>.servicebus.windows.net, or the sovereign cloud's suffix: the host of the
// namespace's endpoint (https://<host>:443/).
output fullyQualifiedNamespace string = split(split(namespace.properties.serviceBusEndpoint, '//')[1], ':')[0]
output hubName string = hub.name
output ruleId string = diagnosticsRule.id
