// The subscription's Event Grid system topic (Microsoft.Resources.Subscriptions, global), with
// a system-assigned identity that writes dead letters. Only one system topic may exist per
// source, so an existing one can be named instead; it needs a system-assigned identity.

@description('Name of an existing system topic for this subscription, or empty to create one.')
param existingTopicName string

@description('Tags for a created topic.')
param tags object

var createdTopicName = 'cmk-guard-subscription-events'

resource created 'Microsoft.EventGrid/systemTopics@2025-02-15' = if (empty(existingTopicName)) {
  name: createdTopicName
  location: 'global'
  tags: tags
  identity: {
    type: 'SystemAssigned'
  }
  properties: {
    source: subscription().id
    topicType: 'Microsoft.Resources.Subscriptions'
  }
}

resource found 'Microsoft.EventGrid/systemTopics@2025-02-15' existing = if (!empty(existingTopicName)) {
  name: existingTopicName
}

output name string = empty(existingTopicName) ? createdTopicName : existingTopicName
output principalId string = empty(existingTopicName) ? created.identity.principalId : found.identity.principalId
