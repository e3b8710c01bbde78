// The function app and what it runs on: a user-assigned identity, a Flex Consumption plan
// (Linux, custom handler), the host storage account (host state and the deployment package),
// a data storage account (cmk-guard's state and Event Grid's dead letters), Application
// Insights with Entra authentication only, and the app settings cmk-guard reads.
//
// Why two storage accounts: the Functions host needs Storage Blob Data Owner on its whole
// account. Keeping the state and the dead letters in a second account keeps cmk-guard's grant
// on the state container (Storage Blob Data Contributor) the only one it has there, and gives it
// no access at all to the dead letters, which stay an untouched record of undelivered events.

@description('Region of every resource in this module.')
param location string

@description('Tags for every resource; the function app also gets azd-service-name.')
param tags object

@description('Short unique suffix for globally unique names.')
param resourceToken string

@description('The azd service name in azure.yaml; azd finds the app to deploy to by this tag.')
param serviceName string

@description('observe, alert or remediate (CMKGUARD_MODE).')
param mode string

@description('Subscription ids in scope (CMKGUARD_SUBSCRIPTIONS).')
param subscriptionIds array

@description('Management group ids whose subscriptions join the scope (CMKGUARD_MANAGEMENT_GROUPS).')
param managementGroups array

@description('Host name of the audit Event Hubs namespace (<name>.servicebus.windows.net).')
param auditEventHubNamespace string

@description('Name of the audit hub (CMKGUARD_AUDIT_EVENTHUB_NAME).')
param auditEventHubName string

@description('ARM id of the authorization rule diagnostic settings send with (CMKGUARD_AUDIT_EVENTHUB_RULE_ID).')
param auditEventHubRuleId string

@description('Path of the policy file inside the package, or empty for the built-in policy.')
param policyFile string

@description('NCRONTAB of the Sweep function (CMKGUARD_SWEEP_SCHEDULE).')
param sweepSchedule string

@description('Log filter (CMKGUARD_LOG).')
param logLevel string

@description('Teams Workflows webhook URL; ignored when teamsWebhookSecretUri is set.')
@secure()
param teamsWebhookUrl string

@description('Key Vault secret URI holding the Teams webhook URL (a Key Vault reference).')
param teamsWebhookSecretUri string

@description('Generic JSON webhook URL; ignored when webhookSecretUri is set.')
@secure()
param webhookUrl string

@description('Key Vault secret URI holding the generic webhook URL.')
param webhookSecretUri string

@description('Email recipients, comma-separated (CMKGUARD_EMAIL_TO).')
param emailTo string

@description('Email sender (CMKGUARD_EMAIL_FROM).')
param emailFrom string

@description('Azure Communication Services endpoint for email (CMKGUARD_ACS_ENDPOINT).')
param acsEndpoint string

@description('smtp://user:pass@host:587; ignored when smtpUrlSecretUri is set.')
@secure()
param smtpUrl string

@description('Key Vault secret URI holding the SMTP URL.')
param smtpUrlSecretUri string

@description('Maximum number of instances the plan scales out to.')
param maximumInstanceCount int

@description('Memory of one instance, in MB.')
param instanceMemoryMB int

@description('Days after which audit records in the state container are deleted; 0 keeps them.')
param auditRetentionDays int

@description('Days after which dead-lettered events are deleted; 0 keeps them.')
param deadLetterRetentionDays int

@description('The Log Analytics workspace (monitor.bicep) Application Insights writes to.')
param logsWorkspaceId string

@description('CMKGUARD_LOGS_INGESTION_ENDPOINT: the data collection endpoint finding changes go to.')
param logsIngestionEndpoint string

@description('CMKGUARD_LOGS_DCR_ID: the immutable id of the data collection rule.')
param logsRuleId string

@description('CMKGUARD_LOGS_STREAM: the rule\'s input stream.')
param logsStream string

var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}
var deploymentContainerName = 'app-package'
var stateContainerName = 'state'
var deadLetterContainerName = 'deadletter'
// The sweep fan-out's queue (CMKGUARD_SWEEP_QUEUE) on the host storage; the host adds `-poison`.
var sweepQueueName = 'cmk-guard-sweep'
var keyVaultReference = '@Microsoft.KeyVault(SecretUri='

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: 'id-cmkguard-${resourceToken}'
  location: location
  tags: tags
}

resource appInsights 'Microsoft.Insights/components@2020-02-02' = {
  name: 'appi-cmkguard-${resourceToken}'
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logsWorkspaceId
    DisableLocalAuth: true
  }
}

resource hostStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'sthost${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource hostBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource hostQueues 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: hostStorage
  name: 'default'
}

// The sweep fans out over this queue: the Sweep function enqueues one message per
// subscription, SweepSubscription (a queue trigger) sweeps each, so instances share the work.
// A message that fails maxDequeueCount times (host.json) goes to the poison queue, which the
// next sweep reports as guard.visibility and empties.
resource sweepQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: hostQueues
  name: sweepQueueName
}

resource sweepPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: hostQueues
  name: '${sweepQueueName}-poison'
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: hostBlobs
  name: deploymentContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource dataStorage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  name: 'stdata${resourceToken}'
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: {
    name: 'Standard_LRS'
  }
  properties: {
    accessTier: 'Hot'
    allowBlobPublicAccess: false
    allowSharedKeyAccess: false
    allowCrossTenantReplication: false
    defaultToOAuthAuthentication: true
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    publicNetworkAccess: 'Enabled'
    networkAcls: {
      bypass: 'AzureServices'
      defaultAction: 'Allow'
    }
  }
}

resource dataBlobs 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: dataStorage
  name: 'default'
  properties: {
    deleteRetentionPolicy: {
      enabled: true
      days: 7
    }
    containerDeleteRetentionPolicy: {
      enabled: true
      days: 7
    }
  }
}

resource stateContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: stateContainerName
  properties: {
    publicAccess: 'None'
  }
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: dataBlobs
  name: deadLetterContainerName
  properties: {
    publicAccess: 'None'
  }
}

// docs/state.md: cmk-guard never deletes audit records; a lifecycle rule expires them.
resource retention 'Microsoft.Storage/storageAccounts/managementPolicies@2023-05-01' = if (auditRetentionDays > 0 || deadLetterRetentionDays > 0) {
  parent: dataStorage
  name: 'default'
  properties: {
    policy: {
      rules: concat(auditRetentionDays > 0 ? [
        {
          name: 'expire-audit-records'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${stateContainerName}/audit/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: auditRetentionDays
                }
              }
            }
          }
        }
      ] : [], deadLetterRetentionDays > 0 ? [
        {
          name: 'expire-dead-letters'
          enabled: true
          type: 'Lifecycle'
          definition: {
            filters: {
              blobTypes: [
                'blockBlob'
              ]
              prefixMatch: [
                '${deadLetterContainerName}/'
              ]
            }
            actions: {
              baseBlob: {
                delete: {
                  daysAfterModificationGreaterThan: deadLetterRetentionDays
                }
              }
            }
          }
        }
      ] : [])
    }
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  name: 'plan-cmkguard-${resourceToken}'
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource site 'Microsoft.Web/sites@2024-04-01' = {
  name: 'func-cmkguard-${resourceToken}'
  location: location
  tags: union(tags, {
    'azd-service-name': serviceName
  })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: {
      '${identity.id}': {}
    }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    clientCertEnabled: false
    keyVaultReferenceIdentity: identity.id
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${hostStorage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      scaleAndConcurrency: {
        maximumInstanceCount: maximumInstanceCount
        instanceMemoryMB: instanceMemoryMB
      }
      // A custom handler: the host starts `cmk-guard serve` (host.json) and calls it over HTTP.
      runtime: {
        name: 'custom'
        version: '1.0'
      }
    }
  }
}

// Publishing goes through Entra ID (azd, `az functionapp deployment`), never basic auth.
resource ftpCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'ftp'
  properties: {
    allow: false
  }
}

resource scmCredentials 'Microsoft.Web/sites/basicPublishingCredentialsPolicies@2024-04-01' = {
  parent: site
  name: 'scm'
  properties: {
    allow: false
  }
}

// Every app setting the app gets, in one place. handler/tests/integration/infra.rs reads this
// object: its cmk-guard keys must be variables the binary reads (handler/src/settings.rs
// VARIABLES) or properties of a trigger's connection (`<connection>__<property>`, read by the
// host), and the ones a deployment needs must be here. An empty value means "not set" to
// cmk-guard.
var appSettings = {
  AzureWebJobsStorage__credential: 'managedidentity'
  AzureWebJobsStorage__clientId: identity.properties.clientId
  AzureWebJobsStorage__blobServiceUri: hostStorage.properties.primaryEndpoints.blob
  AzureWebJobsStorage__tableServiceUri: hostStorage.properties.primaryEndpoints.table
  // SweepSubscription's trigger, and where cmk-guard enqueues the sweep's messages.
  AzureWebJobsStorage__queueServiceUri: hostStorage.properties.primaryEndpoints.queue
  APPLICATIONINSIGHTS_CONNECTION_STRING: appInsights.properties.ConnectionString
  APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
  AZURE_CLIENT_ID: identity.properties.clientId
  CMKGUARD_MODE: mode
  CMKGUARD_SUBSCRIPTIONS: join(subscriptionIds, ',')
  CMKGUARD_MANAGEMENT_GROUPS: join(managementGroups, ',')
  CMKGUARD_STATE: '${dataStorage.properties.primaryEndpoints.blob}${stateContainerName}'
  CMKGUARD_SWEEP_SCHEDULE: sweepSchedule
  CMKGUARD_SWEEP_QUEUE: sweepQueue.name
  CMKGUARD_POLICY_FILE: policyFile
  // AzureCloud, AzureUSGovernment or AzureChinaCloud: every endpoint cmk-guard uses follows.
  CMKGUARD_CLOUD: environment().name
  CMKGUARD_KEYVAULT_DNS_SUFFIX: environment().suffixes.keyvaultDns
  CMKGUARD_LOG: logLevel
  // Every finding change to CmkGuardFindings_CL (monitor.bicep), sent with the identity.
  CMKGUARD_LOGS_INGESTION_ENDPOINT: logsIngestionEndpoint
  CMKGUARD_LOGS_DCR_ID: logsRuleId
  CMKGUARD_LOGS_STREAM: logsStream
  CMKGUARD_TEAMS_WEBHOOK_URL: empty(teamsWebhookSecretUri) ? teamsWebhookUrl : '${keyVaultReference}${teamsWebhookSecretUri})'
  CMKGUARD_WEBHOOK_URL: empty(webhookSecretUri) ? webhookUrl : '${keyVaultReference}${webhookSecretUri})'
  CMKGUARD_EMAIL_TO: emailTo
  CMKGUARD_EMAIL_FROM: emailFrom
  CMKGUARD_ACS_ENDPOINT: acsEndpoint
  CMKGUARD_SMTP_URL: empty(smtpUrlSecretUri) ? smtpUrl : '${keyVaultReference}${smtpUrlSecretUri})'
  // Self-wiring: where a CMK vault's event subscription delivers (the Event Grid destination)
  // and where its AuditEvent diagnostic setting streams.
  CMKGUARD_KEYVAULT_EVENTS_TARGET: '${site.id}/functions/OnKeyVaultEvent'
  CMKGUARD_AUDIT_EVENTHUB_RULE_ID: auditEventHubRuleId
  CMKGUARD_AUDIT_EVENTHUB_NAME: auditEventHubName
  // OnKeyVaultAudit's trigger connection (`connection: CMKGUARD_AUDIT_EVENTHUB` in its
  // function.json), identity-based: the host reads the hub with the user-assigned identity.
  CMKGUARD_AUDIT_EVENTHUB__fullyQualifiedNamespace: auditEventHubNamespace
  CMKGUARD_AUDIT_EVENTHUB__credential: 'managedidentity'
  CMKGUARD_AUDIT_EVENTHUB__clientId: identity.properties.clientId
}

resource settings 'Microsoft.Web/sites/config@2024-04-01' = {
  parent: site
  name: 'appsettings'
  properties: appSettings
}

// The host's own storage: the Functions documentation asks for Storage Blob Data Owner on the
// account (it creates its containers, keys and timer leases there, and reads the package).
resource hostStorageAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identity.id, roles.storageBlobDataOwner)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataOwner)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The host records its diagnostic events in tables of its storage.
resource hostTableAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(hostStorage.id, identity.id, roles.storageTableDataContributor)
  scope: hostStorage
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageTableDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// The sweep fan-out: cmk-guard sends to the sweep queue and reads and deletes the poison queue;
// the host's trigger reads and deletes the sweep queue and writes the poison queue. Each grant
// is on one queue, not on the account.
resource sweepQueueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sweepQueue.id, identity.id, roles.storageQueueDataContributor)
  scope: sweepQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource sweepPoisonQueueAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(sweepPoisonQueue.id, identity.id, roles.storageQueueDataContributor)
  scope: sweepPoisonQueue
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageQueueDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

// cmk-guard's state (CMKGUARD_STATE): read, write and delete blobs in that container only.
resource stateAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(stateContainer.id, identity.id, roles.storageBlobDataContributor)
  scope: stateContainer
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

resource telemetryAccess 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(appInsights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: appInsights
  properties: {
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
  }
}

output functionAppName string = site.name
output functionAppId string = site.id
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output dataStorageId string = dataStorage.id
output dataStorageName string = dataStorage.name
output stateContainerUrl string = '${dataStorage.properties.primaryEndpoints.blob}${stateContainerName}'
output deadLetterContainerName string = deadLetterContainerName
