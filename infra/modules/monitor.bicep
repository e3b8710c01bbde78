// Azure Monitor for cmk-guard: the Log Analytics workspace (Application Insights writes to it
// too), the custom table CmkGuardFindings_CL, the data collection endpoint and rule cmk-guard
// sends every finding change through (Logs Ingestion API; the app settings
// CMKGUARD_LOGS_INGESTION_ENDPOINT and CMKGUARD_LOGS_DCR_ID), the workbook, and scheduled query
// alert rules with their action group. The app's identity gets Monitoring Metrics Publisher on
// the rule only: monitor-access.bicep, after the app exists.
// Queries and the workbook live beside this file (monitor/*.kql, monitor/workbook.json) so that
// tests can check them offline (handler/tests/integration/infra/monitor.rs).

@description('Region of the workspace, the endpoint and the rule.')
param location string

param tags object

@description('Names the resources (the deployment\'s resource token).')
param resourceToken string

@minValue(5)
@description('A critical finding open longer than this many minutes raises an alert.')
param criticalOpenMinutes int = 60

@description('Who the action group emails: [{name, address}].')
param alertEmails array = []

var findingColumns = [
  { name: 'TimeGenerated', type: 'datetime' }
  { name: 'Change', type: 'string' }
  { name: 'Rule', type: 'string' }
  { name: 'Severity', type: 'string' }
  { name: 'State', type: 'string' }
  { name: 'WorkspaceId', type: 'string' }
  { name: 'SubscriptionId', type: 'string' }
  { name: 'ResourceId', type: 'string' }
  { name: 'Observed', type: 'string' }
  { name: 'Expected', type: 'string' }
  { name: 'Remediation', type: 'string' }
]
var streamName = 'Custom-CmkGuardFindings'
var tableName = 'CmkGuardFindings_CL'

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: 'log-cmkguard-${resourceToken}'
  location: location
  tags: tags
  properties: {
    retentionInDays: 30
    sku: {
      name: 'PerGB2018'
    }
  }
}

resource findingsTable 'Microsoft.OperationalInsights/workspaces/tables@2022-10-01' = {
  parent: logs
  name: tableName
  properties: {
    plan: 'Analytics'
    retentionInDays: 90
    schema: {
      name: tableName
      columns: findingColumns
    }
  }
}

resource endpoint 'Microsoft.Insights/dataCollectionEndpoints@2022-06-01' = {
  name: 'dce-cmkguard-${resourceToken}'
  location: location
  tags: tags
  properties: {
    networkAcls: {
      publicNetworkAccess: 'Enabled'
    }
  }
}

resource rule 'Microsoft.Insights/dataCollectionRules@2022-06-01' = {
  name: 'dcr-cmkguard-${resourceToken}'
  location: location
  tags: tags
  dependsOn: [
    findingsTable
  ]
  properties: {
    dataCollectionEndpointId: endpoint.id
    streamDeclarations: {
      '${streamName}': {
        columns: findingColumns
      }
    }
    destinations: {
      logAnalytics: [
        {
          name: 'findings'
          workspaceResourceId: logs.id
        }
      ]
    }
    dataFlows: [
      {
        streams: [
          streamName
        ]
        destinations: [
          'findings'
        ]
        transformKql: 'source'
        outputStream: 'Custom-${tableName}'
      }
    ]
  }
}

resource workbook 'Microsoft.Insights/workbooks@2023-06-01' = {
  name: guid(resourceGroup().id, 'cmk-guard-findings-workbook')
  location: location
  tags: tags
  kind: 'shared'
  properties: {
    displayName: 'cmk-guard findings'
    category: 'workbook'
    sourceId: logs.id
    serializedData: loadTextContent('monitor/workbook.json')
  }
}

resource actionGroup 'Microsoft.Insights/actionGroups@2023-01-01' = {
  name: 'ag-cmkguard-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    groupShortName: 'cmkguard'
    enabled: true
    emailReceivers: [for receiver in alertEmails: {
      name: receiver.name
      emailAddress: receiver.address
      useCommonAlertSchema: true
    }]
  }
}

var alerts = [
  {
    name: 'critical-open'
    displayName: 'cmk-guard: critical finding open longer than ${criticalOpenMinutes} minutes'
    severity: 1
    query: replace(loadTextContent('monitor/critical-open.kql'), '{openMinutes}', string(criticalOpenMinutes))
  }
  {
    name: 'visibility'
    displayName: 'cmk-guard: guard.visibility (cmk-guard cannot see what it checks)'
    severity: 2
    query: loadTextContent('monitor/visibility.kql')
  }
  {
    name: 'dead-letters'
    displayName: 'cmk-guard: events dead-lettered by Event Grid'
    severity: 2
    query: loadTextContent('monitor/dead-letters.kql')
  }
  {
    name: 'failing-invocations'
    displayName: 'cmk-guard: failing invocations'
    severity: 2
    query: loadTextContent('monitor/failing-invocations.kql')
  }
]

resource alertRules 'Microsoft.Insights/scheduledQueryRules@2023-03-15-preview' = [for alert in alerts: {
  name: 'alert-cmkguard-${alert.name}-${resourceToken}'
  location: location
  tags: tags
  dependsOn: [
    findingsTable
  ]
  properties: {
    displayName: alert.displayName
    severity: alert.severity
    enabled: true
    evaluationFrequency: 'PT5M'
    windowSize: alert.name == 'critical-open' ? 'P2D' : 'PT5M'
    scopes: [
      logs.id
    ]
    // The table may still be empty when the rule is created.
    skipQueryValidation: true
    criteria: {
      allOf: [
        {
          query: alert.query
          timeAggregation: 'Count'
          operator: 'GreaterThan'
          threshold: 0
          failingPeriods: {
            numberOfEvaluationPeriods: 1
            minFailingPeriodsToAlert: 1
          }
        }
      ]
    }
    autoMitigate: true
    actions: {
      actionGroups: [
        actionGroup.id
      ]
    }
  }
}]

output workspaceId string = logs.id
output workspaceName string = logs.name
output ingestionEndpoint string = endpoint.properties.logsIngestion.endpoint
output ruleImmutableId string = rule.properties.immutableId
output ruleName string = rule.name
output streamName string = streamName
