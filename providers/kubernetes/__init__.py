"""Kubernetes: Clusters and SparkPools rendered into Kubernetes objects, the client and the provider.

The API test server of tests, benchmarks and the lab is the lab's (`lab.apiserver`)."""
