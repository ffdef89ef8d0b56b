-- Orthanc rule of the dicomnode demo stack: forward every stable MR or slide-microscopy
-- series to the node (modality "dicomnode" in orthanc.json). The node's own routing rules
-- (T2 pelvis, WSI) decide what gets analysed; everything else it logs and expires.
-- The node's results come back as SEG and SR series and are never forwarded again.
function OnStableSeries(seriesId, tags, metadata)
  local modality = tags['Modality']
  if modality == 'MR' or modality == 'SM' then
    print('dicomnode demo: forwarding series ' .. seriesId .. ' (' .. modality .. ') to DICOMNODE')
    -- the REST route takes a series id (Lua's SendToModality expects instances)
    RestApiPost('/modalities/dicomnode/store', seriesId)
  end
end
