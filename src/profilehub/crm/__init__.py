"""CRM dialect (``/v2/crm``): people, companies, custom objects, attributes and records."""
