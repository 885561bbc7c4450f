"""CSV import from other CRMs (Pipedrive, HubSpot, Zendesk Sell) through the typed commands, and CSV export."""
