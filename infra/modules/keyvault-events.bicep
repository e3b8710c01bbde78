// The event subscription of one Key Vault system topic to OnKeyVaultEvent: the key events
// intake acts on (handler/src/intake/classify.rs); secret and certificate events are not sent.

@description('Name of the vault\'s system topic in this resource group.')
param topicName string

@description('Resource id of the OnKeyVaultEvent function.')
param functionId string

@description('Retry and dead-letter settings: {maxDeliveryAttempts, eventTimeToLiveInMinutes, deadLetterStorageId, deadLetterContainer}.')
param delivery object

resource topic 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = {
  name: topicName
}

resource keyEvents 'Microsoft.EventGrid/systemTopics/eventSubscriptions@2025-02-15' = {
  parent: topic
  name: 'cmk-guard-key-events'
  properties: {
    destination: {
      endpointType: 'AzureFunction'
      properties: {
        resourceId: functionId
        maxEventsPerBatch: 1
        preferredBatchSizeInKilobytes: 64
      }
    }
    eventDeliverySchema: 'EventGridSchema'
    filter: {
      includedEventTypes: [
        'Microsoft.KeyVault.KeyNewVersionCreated'
        'Microsoft.KeyVault.KeyNearExpiry'
        'Microsoft.KeyVault.KeyExpired'
        'Microsoft.KeyVault.VaultAccessPolicyChanged'
      ]
    }
    retryPolicy: {
      maxDeliveryAttempts: delivery.maxDeliveryAttempts
      eventTimeToLiveInMinutes: delivery.eventTimeToLiveInMinutes
    }
    deadLetterWithResourceIdentity: {
      identity: {
        type: 'SystemAssigned'
      }
      deadLetterDestination: {
        endpointType: 'StorageBlob'
        properties: {
          resourceId: delivery.deadLetterStorageId
          blobContainerName: delivery.deadLetterContainer
        }
      }
    }
  }
}
