// After the app exists: Monitoring Metrics Publisher for cmk-guard's identity on the data
// collection rule only (what the Logs Ingestion API asks of a sender), and the blob write logs
// of the data storage account (where Event Grid dead-letters events) sent to the workspace, for
// the dead-letter alert of monitor.bicep.

@description('Name of the data collection rule cmk-guard sends finding changes through.')
param ruleName string

@description('Principal id of cmk-guard\'s user-assigned identity.')
param principalId string

@description('Name of the storage account that holds the deadletter container.')
param dataStorageName string

@description('Resource id of the Log Analytics workspace.')
param workspaceId string

var monitoringMetricsPublisherRoleId = '3913510d-42f4-4e42-8a64-420c390055eb'

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' existing = {
  name: ruleName
}

resource publisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(rule.id, principalId, monitoringMetricsPublisherRoleId)
  scope: rule
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', monitoringMetricsPublisherRoleId)
    principalId: principalId
    principalType: 'ServicePrincipal'
  }
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: dataStorageName
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' existing = {
  parent: dataStorage
  name: 'default'
}

resource blobWrites 'Microsoft.Insights/diagnosticSettings@2021-05-01-preview' = {
  name: 'cmkguard-deadletter-writes'
  scope: blobService
  properties: {
    workspaceId: workspaceId
    logs: [
      {
        category: 'StorageWrite'
        enabled: true
      }
    ]
  }
}
