"""The Flan 2022 collection: the task catalog (catalog), template families (flan_templates), field adapters
(flan_adapters), the data sources, one module per kind (sources), and the seqio tasks and mixtures
(flan_tasks)."""
