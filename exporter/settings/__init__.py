"""Where every value comes from: the settings (flags over ``EVOTIC_*`` variables), the accounts
file, the quota files, and the strict YAML and schema helpers every file is read with.

It may use ``exporter.api`` (token files, proxies and CA files are the API's) and
``exporter.runtime``; a mistake is one line naming the setting or the file and the key.
"""
