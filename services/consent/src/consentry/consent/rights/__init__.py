"""Rights requests (erasure, access, correction, child-data erasure): the GDPR Art. 12(3)
deadline engine (`deadlines`), the requests and their API (`models`, `repository`,
`service`, `views`), the fan-out with the consent service's own erasure and the deadline
warnings (`fanout`, worker `rights`), the completion tracking (`tracker`, worker
`rights-tracker`) and the signed completion certificate (`certificate`)."""
